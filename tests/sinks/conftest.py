"""Helpers the format tests share: a run killed at a moment, and an output folder's files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable


def kill_when(args: list[str], ready: Callable[[], bool]) -> None:
    """``audiomill ARGS`` in a process of its own, killed (SIGKILL) as soon as ``ready()``; it must still run."""
    process = subprocess.Popen([sys.executable, "-m", "audiomill", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def output_tree(out) -> dict[str, bytes]:
    """Every file of an output folder but its state, by path relative to it."""
    return {os.path.relpath(os.path.join(folder, name), out): open(os.path.join(folder, name), "rb").read()
            for folder, _, names in os.walk(out) if "_audiomill" not in folder for name in names}
