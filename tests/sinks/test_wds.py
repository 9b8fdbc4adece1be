"""--format wds: WebDataset tars read by webdataset itself, codes equal to JSON Lines', and the same
bytes after a kill."""

from __future__ import annotations

import io
import json
import os

import numpy as np

from tests.conftest import run_audiomill
from tests.sinks.conftest import kill_when


def _journaled(out) -> bool:
    for name in os.listdir(out) if os.path.isdir(out) else ():
        if name.endswith(".tar.partial"):
            try:
                with open(os.path.join(out, name), "rb") as handle:
                    if b"\n" in handle.read():
                        return True
            except FileNotFoundError:
                continue
    return False


def test_wds_reads_back_with_webdataset_and_a_killed_run_gives_the_same_bytes(acceptance_shards, tiny_snac,
                                                                               plain_run, tmp_path):
    import webdataset

    args = ["tokenize", *acceptance_shards["paths"], "--model-path", tiny_snac, "--format", "wds"]
    reference = tmp_path / "reference"
    assert run_audiomill(*args, "--out", str(reference)).returncode == 3
    # read by WebDataset's own reader: a sample per record, codes.npy and json
    samples = list(webdataset.WebDataset(str(reference / "000002.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [r["key"] for r in plain_run]
    for sample, record in zip(samples, plain_run):
        codes = np.load(io.BytesIO(sample["codes.npy"]), allow_pickle=False)
        meta = json.loads(sample["json"])
        assert codes.dtype == np.int16 and meta["token_shape"] == record["token_shape"]
        levels = np.split(codes, np.cumsum(meta["token_shape"])[:-1])  # SNAC: levels one after another
        assert [level.tolist() for level in levels] == record["tokens"]
        assert meta == {k: v for k, v in record.items() if k != "tokens"}
    assert os.path.isfile(reference / "000001.errors.jsonl")
    # killed once its first records are journaled, then resumed: the same tars
    out = tmp_path / "out"
    kill_when([*args, "--out", str(out)], lambda: _journaled(out))
    assert run_audiomill(*args, "--out", str(out)).returncode == 3
    finals = sorted(n for n in os.listdir(reference) if not n.startswith("_"))
    assert finals == ["000001.errors.jsonl", "000001.tar", "000002.tar", "README.md"]
    assert {n: (out / n).read_bytes() for n in finals} == {n: (reference / n).read_bytes() for n in finals}
    assert json.loads(run_audiomill("status", str(out), "--json", "--check-validity").stdout)["totals"]["problems"] == 0
