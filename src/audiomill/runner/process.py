"""The life of the processes of a run: stopping cleanly on a signal, and never outliving the parent."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)


STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class Stop(threading.Event):
    """A request to stop soon; remembers the signal that asked for it."""

    signal: int | None = None


def stop_on_signals(stop: Stop, signals=STOP_SIGNALS) -> None:
    """Set ``stop`` on a time-limit warning (USR2) or TERM. A second USR2 changes nothing (SLURM
    signals every process of a step, and the parent forwards it too); a second TERM acts as it
    would have without this handler."""
    caught: dict[int, Any] = {}

    def handle(number, frame) -> None:
        if stop.is_set():
            if number != signal.SIGUSR2:
                signal.signal(number, caught.get(number) or signal.SIG_DFL)
                os.kill(os.getpid(), number)
            return
        log.warning("%s received: finishing the current batch, then stopping", signal.Signals(number).name)
        stop.signal = number
        stop.set()

    for number in signals:
        caught[number] = signal.signal(number, handle)


def die_with_parent() -> None:
    """A worker must not outlive a killed parent, or it would go on holding shard locks (a decoder
    would wait for work forever). The parent may already be gone: it can be killed while a busy
    machine still imports this child, and then neither the death signal nor the watch would fire."""
    import multiprocessing

    spawner = multiprocessing.parent_process()
    parent = spawner.pid if spawner is not None else os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def quiet_native_stderr() -> None:
    """Keep what C libraries print straight to file descriptor 2 off the terminal (mpg123, inside
    libsndfile, writes "Note: Trying to resync..." for every damaged MP3), while Python's own
    ``sys.stderr`` (tracebacks, logging) goes where it went. For a decoder process: what goes
    wrong with a file reaches the user as its error record."""
    try:
        kept = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(kept, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
