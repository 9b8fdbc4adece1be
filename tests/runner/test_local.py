"""The local executor stopped by a signal, as SLURM stops a job script: it keeps every file written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.conftest import run_audiomill
from tests.conftest import first_record_written
from tests.runner.conftest import outputs, wait_until


def test_term_stops_after_the_batch_and_the_next_run_finishes_identically(eight_shards, eight_reference, tiny_snac,
                                                                          tmp_path):
    out = tmp_path / "out"
    args = ["tokenize", *eight_shards, "--out", str(out), "--model-path", tiny_snac, "--devices", "cpu"]
    process = subprocess.Popen([sys.executable, "-m", "audiomill", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_until(lambda: first_record_written(out), 120, "the first record")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 4, stderr  # not complete
    assert "stopped by SIGTERM" in stderr and "resumable" in stderr
    status = run_audiomill("status", str(out), "--json")
    states = {shard["state"] for shard in json.loads(status.stdout)["shards"]}
    assert "running" not in states and states - {"complete"}  # stopped part way, nothing held
    result = run_audiomill(*args)
    assert result.returncode == 3, result.stderr
    assert outputs(out) == eight_reference
