"""--lines-per-file: a shard's records in files of at most N, loaded as one dataset; the same bytes after a kill."""

from __future__ import annotations

import gzip
import json
import os

from tests.conftest import run_audiomill
from tests.sinks.conftest import kill_when, output_tree


def test_records_rotate_every_n_lines_in_order_and_a_killed_run_gives_the_same_bytes(acceptance_shards, tiny_snac,
                                                                                       plain_run, tmp_path):
    import datasets

    args = ["tokenize", *acceptance_shards["paths"], "--model-path", tiny_snac, "--format", "jsonl.gz",
            "--lines-per-file", "3"]
    reference = tmp_path / "reference"
    assert run_audiomill(*args, "--out", str(reference)).returncode == 3
    index = json.loads((reference / "000002.parts.json").read_text())
    assert index == {"format": "jsonl.gz", "parts": [["000002-00000.jsonl.gz", 3], ["000002-00001.jsonl.gz", 1]]}
    records = [json.loads(line) for name, _ in index["parts"] for line in gzip.open(reference / name)]
    assert records == plain_run  # in order, every record once
    first = json.loads((reference / "000001.parts.json").read_text())["parts"]
    assert [n for _, n in first] == [3, 2]  # shard 1: 5 records (3 of its files are errors)
    expected = output_tree(reference)
    out = tmp_path / "out"
    kill_when([*args, "--out", str(out)], lambda: os.path.isdir(out / "_audiomill" / "done"))
    assert run_audiomill(*args, "--out", str(out)).returncode == 3
    assert output_tree(out) == expected
    # the parts are the dataset; another N is another output
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded["key"][-4:] == [r["key"] for r in plain_run] and len(loaded) == 9
    clash = run_audiomill(*args[:-1], "4", "--out", str(out))
    assert clash.returncode == 1 and "made with --lines-per-file 3, not --lines-per-file 4" in clash.stderr
