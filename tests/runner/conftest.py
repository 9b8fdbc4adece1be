"""Corpora and reference outputs shared by the executor tests, and a real SLURM cluster on localhost."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from audiomill.corpus import SENTENCES, encode_audio, speak, speech, write_tar
from tests.conftest import run_audiomill

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def outputs(out) -> dict[str, bytes]:
    """The user-visible output: every .jsonl file (records and errors), by name."""
    return {name: open(os.path.join(out, name), "rb").read()
            for name in sorted(os.listdir(out)) if name.endswith(".jsonl")}


def tokenize_locally(inputs: list[str], out, model: str, devices: str = "cpu") -> dict[str, bytes]:
    result = run_audiomill("tokenize", *inputs, "--out", str(out), "--model-path", model, "--devices", devices)
    assert result.returncode in (0, 3), result.stderr
    return outputs(out)


def write_shards(folder, members_of, count: int = 8) -> list[str]:
    """``count`` tar shards ``000000.tar``..., shard ``n`` holding the members ``members_of(n)``."""
    paths = []
    for number in range(count):
        path = str(folder / f"{number:06d}.tar")
        write_tar(path, members_of(number))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def eight_shards(tmp_path_factory) -> list[str]:
    """Eight small tar shards of real speech (MP3, FLAC, WAV), one with a file that is not audio."""
    def members(number: int) -> list[tuple[str, bytes]]:
        found = []
        for slot, extension in enumerate(("mp3", "flac", "wav")):
            samples, rate = speak(SENTENCES[(number * 3 + slot) % len(SENTENCES)])
            found.append((f"s{number}/utt{slot}.{extension}", encode_audio(samples, rate, extension)))
        if number == 3:
            found.append(("s3/broken.mp3", b"not audio at all\n" * 50))
        return found

    return write_shards(tmp_path_factory.mktemp("eight"), members)


@pytest.fixture(scope="session")
def eight_reference(eight_shards, tiny_snac, tmp_path_factory) -> dict[str, bytes]:
    """One uninterrupted local run over the eight shards: what every executor must reproduce."""
    return tokenize_locally(eight_shards, tmp_path_factory.mktemp("eight-reference") / "out", tiny_snac)


@pytest.fixture(scope="session")
def long_shards(tmp_path_factory) -> list[str]:
    """Shards that take one CPU task longer than SLURM's 30 s time-limit check: six of 166 s of audio, about
    7 s of work each here (the signal comes at the controller's first check after the start, 0 to 30 s in)."""
    def members(number: int) -> list[tuple[str, bytes]]:
        found = []
        for slot, extension in enumerate(("flac", "wav", "flac", "flac")):
            samples, rate = speech(40.0 + slot, seed=number * 4 + slot)
            found.append((f"l{number}/talk{slot}.{extension}", encode_audio(samples, rate, extension)))
        return found

    return write_shards(tmp_path_factory.mktemp("long"), members, count=6)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster (Debian's slurmctld, slurmd, munge) with our own config.

    Yields the environment that points SLURM's commands at it; tears it down after the session."""
    if os.geteuid() != 0:
        pytest.skip("the localhost SLURM cluster runs its daemons as root")
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "sbatch") if
               shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}")]
    assert not missing, f"install the SLURM packages (scripts/install-system-deps.sh): missing {missing}"
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "AUDIOMILL_SLURMCTLD_PORT": str(_free_port()), "AUDIOMILL_SLURMD_PORT": str(_free_port())}
    script = os.path.join(ROOT, "scripts", "slurm-cluster.sh")
    up = subprocess.run(["bash", script, "up", str(folder)], capture_output=True, text=True, env=env, timeout=120)
    assert up.returncode == 0, up.stderr
    env["SLURM_CONF"] = up.stdout.strip().split("=", 1)[1]
    try:
        yield env
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        subprocess.run(["bash", script, "down", str(folder)], env=env, capture_output=True, timeout=120)


def squeue(env: dict, *args: str) -> list[str]:
    result = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, env=env, timeout=30)
    return result.stdout.split("\n") if result.stdout.strip() else []


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
