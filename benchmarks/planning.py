"""How long planning a folder of many files takes, and how much memory: ``python benchmarks/planning.py``.

Makes a folder of ``--files`` empty ``.wav`` files (``--per-folder`` per subfolder; planning
never opens them), then, each in a fresh process: plans it as ``audiomill tokenize`` does
(``runner.plan.prepare``: the codec check with random weights, the walk, the sorted listing
into the plan, the shards), reads one shard's items from the listing, and plans again as a
rerun does (the folder walked once more, to say whether files were added). Prints one JSON
object with the wall seconds and peak RSS of each, next to a run over ``--baseline`` files,
so that what the listing itself costs can be seen.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PLAN = """
import json, resource, sys, time
from audiomill.config import RunConfig
from audiomill.runner.plan import prepare
from audiomill.sources import read_shard
cfg = RunConfig(inputs=[sys.argv[1]], out=sys.argv[2], files_per_shard=int(sys.argv[3]), random_weights=True,
                devices="cpu")
started = time.perf_counter()
shards = prepare(cfg)
planned = time.perf_counter() - started
rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
items = sum(1 for _ in read_shard(shards[len(shards) // 2]))
read = time.perf_counter() - started
started = time.perf_counter()
prepare(RunConfig(**{**cfg.to_json(), "outputs": []}))  # a rerun: the listing is checked against the folder
replanned = time.perf_counter() - started
print(json.dumps({"shards": len(shards), "plan_seconds": round(planned, 2), "peak_rss_mb": round(rss_plan, 1),
                  "read_one_shard_seconds": round(read, 4), "items_in_it": items,
                  "replan_seconds": round(replanned, 2),
                  "peak_rss_after_replan_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def make_folder(root: str, files: int, per_folder: int) -> float:
    started = time.perf_counter()
    for first in range(0, files, per_folder):
        folder = os.path.join(root, f"d{first // per_folder:05d}")
        os.makedirs(folder)
        for number in range(first, min(files, first + per_folder)):
            open(os.path.join(folder, f"f{number:07d}.wav"), "wb").close()
    return time.perf_counter() - started


def plan(root: str, out: str, per_shard: int) -> dict:
    result = subprocess.run([sys.executable, "-c", PLAN, root, out, str(per_shard)], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=1000)
    parser.add_argument("--per-folder", type=int, default=1000)
    parser.add_argument("--files-per-shard", type=int, default=1000)
    args = parser.parse_args()
    report = {"date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as work:
        for label, count in (("baseline", args.baseline), ("large", args.files)):
            root = os.path.join(work, label)
            made = make_folder(root, count, args.per_folder)
            report[label] = {"files": count, "make_seconds": round(made, 1),
                             **plan(root, os.path.join(work, f"out-{label}"), args.files_per_shard)}
            listing = os.path.join(work, f"out-{label}", "_audiomill", "listing")
            report[label]["listing_mb"] = round(sum(os.path.getsize(os.path.join(listing, n))
                                                    for n in os.listdir(listing)) / 2**20, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
