"""The decode pool: processes that turn items into codec-rate windows while the model encodes.

Each process takes a task (a file to decode), streams it block by block through the
resampler and the :class:`~audiomill.chunking.Windower`, and sends each window as
soon as it is cut, so a two-hour file never sits whole in memory. Queues are
bounded both ways: reading stops when the decoders are busy, decoders stop when
the encoder is behind. A decoder that dies (a crash inside a native library on a
hostile file) costs its current file an error record and is replaced.

Messages to the consumer, tagged with the task's ticket:

- ``("begin", worker, ticket)`` the worker took the task;
- ``("window", ticket, window, samples, last, num_samples)`` one window; ``num_samples``
  (the file's length at the codec rate) is set on the last one;
- ``("error", ticket, reason)`` the file cannot be used (after zero or more windows).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
from dataclasses import dataclass
from typing import Any

from audiomill.audio import ByteRange, Source, open_audio
from audiomill.chunking import Windower
from audiomill.errors import DecodeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowPlan:
    sample_rate: int
    window: int  # samples; 0 = never split
    overlap: int
    alignment: int


@dataclass(frozen=True)
class Task:
    ticket: int
    source: Source
    offset: float | None = None
    duration: float | None = None


def decode_task(task: Task, plan: WindowPlan, send) -> None:
    """Decode one file into windows, sending each as it is cut; errors are sent, never raised."""
    try:
        stream = open_audio(task.source, task.offset, task.duration)
        windower = Windower(plan.window, plan.overlap, plan.alignment)
        for block in stream.blocks(plan.sample_rate):
            for window, samples in windower.push(block):
                send(("window", task.ticket, window, samples, False, 0))
        cuts = list(windower.finish())
        for number, (window, samples) in enumerate(cuts):
            last = number == len(cuts) - 1
            send(("window", task.ticket, window, samples, last, windower.total if last else 0))
    except DecodeError as exc:
        send(("error", task.ticket, str(exc)))
    except Exception as exc:  # a decoder bug must not end the shard
        send(("error", task.ticket, f"decoding failed: {type(exc).__name__}: {exc}"))


def _decoder_main(worker: int, plan: WindowPlan, tasks, results) -> None:
    # The parent decides when to stop. SLURM signals every process of a job step: a time-limit
    # warning (USR2) or a TERM must not kill a decoder, or its file would become an error record.
    for number in (signal.SIGINT, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    from audiomill.runner.local import die_with_parent

    die_with_parent()
    while (task := tasks.get()) is not None:
        results.put(("begin", worker, task.ticket))
        decode_task(task, plan, results.put)


class DecodePool:
    """``workers`` decoding processes fed from a bounded task queue; results on :attr:`results`."""

    def __init__(self, workers: int, plan: WindowPlan) -> None:
        self.plan = plan
        self._ctx = mp.get_context("spawn")
        self.tasks: Any = self._ctx.Queue(maxsize=2 * workers)
        self.results: Any = self._ctx.Queue(maxsize=4 * workers + 4)
        self._procs: list[Any] = [None] * workers
        self.current: dict[int, int] = {}  # worker -> ticket it is decoding
        for worker in range(workers):
            self._start(worker)

    def _start(self, worker: int) -> None:
        proc = self._ctx.Process(target=_decoder_main, args=(worker, self.plan, self.tasks, self.results),
                                 name=f"audiomill-decode-{worker}", daemon=True)
        proc.start()
        self._procs[worker] = proc

    def submit(self, task: Task) -> None:
        self.tasks.put(task)

    def get(self, timeout: float) -> tuple | None:
        """The next message, or None after ``timeout`` seconds; replaces dead decoders as it goes."""
        try:
            message = self.results.get(timeout=timeout)
        except queue.Empty:
            return self._reap()
        if message[0] == "begin":
            self.current[message[1]] = message[2]
        elif message[0] == "window" and message[4] or message[0] == "error":
            for worker, ticket in list(self.current.items()):
                if ticket == message[1]:
                    del self.current[worker]
        return message

    def _reap(self) -> tuple | None:
        for worker, proc in enumerate(self._procs):
            if proc.is_alive():
                continue
            code = proc.exitcode
            ticket = self.current.pop(worker, None)
            log.warning("decoder %d died (exit code %s); starting another", worker, code)
            self._start(worker)
            if ticket is not None:
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                return ("error", ticket, f"the decoder crashed on this file ({how})")
        return None

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.pid]

    def close(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()  # decoders ignore TERM (see _decoder_main) and hold nothing to save
        for proc in self._procs:
            proc.join(timeout=5)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()


def task_source(item) -> Source:
    if item.member_range is not None:
        return ByteRange(item.source, *item.member_range)
    if item.data is not None:
        return item.data
    return item.path


