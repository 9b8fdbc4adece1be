"""Full batches give every clip the codes it gets alone, through the real runner:
``python benchmarks/identity.py [--codecs ...]``.

The corpus of the "full batches" acceptance (``benchmarks/batching.py``: 60 clips of speech,
1 to 20 s, random order, one tar shard). For each codec whose batching is ``masked`` (its tiny
random configuration, or ``--model-dir/<codec>``), two ``audiomill tokenize`` runs over it:
``--batch-seconds 120`` (full batches of any lengths, the default) and ``--max-padding 0``
(only clips of one length together: on this corpus, each clip alone). Both with
``--chunk-seconds 8 --overlap-seconds 2``, so the long clips are windowed. Prints, per codec,
the model calls and clips a call of the full run (from its log) and how many of the 60
records have the same codes in both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from batching import make_corpus  # noqa: E402


def tokenize(codec: str, corpus: str, out: str, weights: list[str], devices: str, *flags: str) -> tuple[dict, str]:
    command = [sys.executable, "-m", "audiomill", "tokenize", corpus, "--codec", codec, *weights, "--out", out,
               "--chunk-seconds", "8", "--overlap-seconds", "2", "--devices", devices, "--progress", "none", *flags]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    with open(os.path.join(out, "corpus.jsonl")) as handle:
        records = {r["key"]: r["tokens"] for r in map(json.loads, handle)}
    return records, result.stderr


def main() -> None:
    from audiomill.codecs import all_codecs, codec_info

    masked = sorted(n for n, i in all_codecs().items() if i.batching == "masked")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", nargs="*", default=masked)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--devices", default="cpu", help="as for tokenize (on a GPU: 0): kernels chosen by shape there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        corpus = make_corpus(work, args.clips, args.seed)
        for codec in args.codecs:
            if args.model_dir:
                weights = ["--model-path", os.path.join(args.model_dir, codec)]
            else:
                import importlib

                info = codec_info(codec)
                folder = importlib.import_module(info.module).save_tiny(info, os.path.join(work, f"{codec}-tiny"))
                weights = ["--model-path", folder]
            full, log = tokenize(codec, corpus, os.path.join(work, f"{codec}-full"), weights, args.devices,
                                 "--batch-seconds", "120")
            alone, _ = tokenize(codec, corpus, os.path.join(work, f"{codec}-alone"), weights, args.devices,
                                "--batch-seconds", "8", "--max-padding", "0")
            calls = re.search(r"(\d+) model calls, ([\d.]+) clips each", log)
            same = sum(full[key] == alone.get(key) for key in full)
            print(json.dumps({"codec": codec, "records": len(full), "identical": same,
                              "model_calls": int(calls.group(1)) if calls else None,
                              "mean_batch_clips": float(calls.group(2)) if calls else None}), flush=True)


if __name__ == "__main__":
    main()
