"""The Ray executor on a real local Ray cluster, compared byte for byte with a local run."""

from __future__ import annotations

import glob
import json
import os

import pytest

from tests.conftest import run_audiomill
from tests.runner.conftest import outputs


def test_local_ray_cluster_runs_the_plan_identically(eight_shards, eight_reference, tiny_snac, tmp_path):
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'audiomill[ray]'")
    out = tmp_path / "out"
    result = run_audiomill("tokenize", *eight_shards, "--out", str(out), "--model-path", tiny_snac,
                           "--devices", "cpu:2", "--executor", "ray", env={"RAY_DEDUP_LOGS": "0"}, timeout=600)
    assert result.returncode == 3, result.stderr  # complete, with the one file that is not audio
    assert outputs(out) == eight_reference
    records = [json.load(open(p)) for p in glob.glob(os.path.join(out, "_audiomill", "tasks", "ray-*.json"))]
    assert sorted(r["task"] for r in records) == [0, 1] and {r["state"] for r in records} == {"finished"}
    assert sum(r["shards_written"] for r in records) == 8
    status = run_audiomill("status", str(out), "--check-validity")
    assert status.returncode == 0 and "tasks: 2 finished" in status.stdout
