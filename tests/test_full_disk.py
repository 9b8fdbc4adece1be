"""A full disk stops the run in one line, loses nothing written, and a rerun after freeing space
finishes as if nothing had happened. The disk is a small tmpfs, mounted when the tests run as root."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import read_jsonl, run_audiomill

SHARDS = 6


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_a_full_disk_stops_the_run_in_one_line_and_a_rerun_after_freeing_space_finishes(
        small_disk, acceptance_shards, tiny_snac, plain_run, tmp_path):
    inputs = tmp_path / "shards"
    inputs.mkdir()
    for number in range(SHARDS):  # six copies of the four-file shard
        shutil.copy(acceptance_shards["paths"][1], inputs / f"{number:06d}.tar")
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(bytes(free - 12 * 4096))  # the plan, the log and a shard or two fit; six do not
    out = small_disk / "out"

    full = run_audiomill("tokenize", str(inputs), "--out", str(out), "--model-path", tiny_snac)
    assert full.returncode == 1
    assert "Traceback" not in full.stderr and "Logging error" not in full.stderr
    (line,) = [line for line in full.stderr.splitlines() if "error:" in line or " ERROR " in line]
    assert line.startswith(f"audiomill: error: no space left on the disk of {out} (")
    assert line.endswith("Free space and rerun: nothing written is lost")
    assert sorted(os.listdir(small_disk)) == ["filler", "out"]

    filler.unlink()
    again = run_audiomill("tokenize", str(inputs), "--out", str(out), "--model-path", tiny_snac)
    assert again.returncode == 0, again.stderr
    intact = [{**r, "tar_file": None} for r in plain_run]
    for number in range(SHARDS):
        assert [{**r, "tar_file": None} for r in read_jsonl(out / f"{number:06d}.jsonl")] == intact
    assert not [name for name in os.listdir(out) if name.endswith((".partial", ".tmp"))]
