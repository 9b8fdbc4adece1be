"""--format npy: a .npy of codes per record and the shard's records beside them; the same bytes after a kill."""

from __future__ import annotations

import json
import os

import numpy as np

from audiomill.sinks.npy import codes_array, tokens_from
from tests.conftest import run_audiomill
from tests.sinks.conftest import kill_when, output_tree


def test_codes_become_the_arrays_a_reader_expects_and_come_back():
    one, books, levels = [[5, 6, 7]], [[1, 2], [3, 4]], [[1], [2, 3], [4, 5, 6, 7]]
    assert codes_array(one, "int16").shape == (3,) and codes_array(books, "int32").shape == (2, 2)
    assert codes_array(levels, "int16").tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert codes_array(levels, "int16").dtype == np.int16
    for tokens in (one, books, levels):
        assert tokens_from(codes_array(tokens, "int32"), [len(level) for level in tokens]) == tokens


def test_npy_files_hold_each_records_codes_and_a_killed_run_gives_the_same_bytes(acceptance_shards, tiny_snac,
                                                                                   plain_run, tmp_path):
    args = ["tokenize", *acceptance_shards["paths"], "--model-path", tiny_snac, "--format", "npy"]
    reference = tmp_path / "reference"
    assert run_audiomill(*args, "--out", str(reference)).returncode == 3
    with open(reference / "000002.npy.jsonl") as handle:
        manifest = [json.loads(line) for line in handle]
    assert [r["key"] for r in manifest] == [r["key"] for r in plain_run]
    for line, record in zip(manifest, plain_run):
        assert line["codes_file"] == f"000002/{record['key']}.npy" and "tokens" not in line
        codes = np.load(reference / line["codes_file"], allow_pickle=False)
        assert codes.dtype == np.int16 and codes.ndim == 1  # SNAC's three levels, one after another
        assert [c.tolist() for c in np.split(codes, np.cumsum(line["token_shape"])[:-1])] == record["tokens"]
        assert {k: v for k, v in line.items() if k != "codes_file"} == {k: v for k, v in record.items()
                                                                          if k != "tokens"}
    expected = output_tree(reference)
    out = tmp_path / "out"
    kill_when([*args, "--out", str(out)], lambda: os.path.isdir(out / "_audiomill" / "done"))
    assert run_audiomill(*args, "--out", str(out)).returncode == 3
    assert output_tree(out) == expected
    listed = run_audiomill("push", str(out), "--repo", "me/x", "--dry-run", check=True).stdout.splitlines()
    assert sorted(listed) == sorted(expected) and "000002/b/utt3.npy" in listed
