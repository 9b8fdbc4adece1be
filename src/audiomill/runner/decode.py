"""The decode pool: processes that turn items into the windows each stage wants, while models run.

Each process takes a task (a file to decode), decodes it once, block by block, resamples
each block once per distinct rate its views ask for, and cuts every view's windows with a
:class:`~audiomill.chunking.Windower` of its own. A view is one stage's (rate, window,
overlap, alignment); stages that want the same view share it. Each window is sent as soon
as it is cut, so a two-hour file never sits whole in memory. Queues are
bounded both ways: reading stops when the decoders are busy, decoders stop when
the encoder is behind. A decoder that dies (a crash inside a native library on a
hostile file) costs its current file an error record and is replaced.

Messages to the consumer, tagged with the task's ticket:

- ``("begin", worker, ticket)`` the worker took the task;
- ``("window", ticket, view, window, samples, last, num_samples)`` one window of one view;
  ``num_samples`` (the file's length at the view's rate) is set on the view's last one;
- ``("done", ticket)`` every window of every view has been sent;
- ``("error", ticket, reason)`` the file cannot be used (after zero or more windows).
"""

from __future__ import annotations

import logging
import os
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
    views: tuple[int, ...] = (0,)  # the views this file is wanted in
    label: str = ""  # shard/key, for the trace


TRACE_ENV = "AUDIOMILL_TRACE_DECODES"  # a file each decode appends a line to: what was decoded, and how often


def decode_task(task: Task, plans: list[WindowPlan], send) -> None:
    """Decode one file into the windows of its views, sending each as it is cut; errors are sent, never raised."""
    _trace(task)
    try:
        stream = open_audio(task.source, task.offset, task.duration)
        views = [plans[v] for v in task.views]
        rates = tuple(sorted({plan.sample_rate for plan in views}))
        windowers = [Windower(plan.window, plan.overlap, plan.alignment) for plan in views]
        for blocks in stream.blocks_at(rates):
            for view, plan, windower in zip(task.views, views, windowers):
                block = blocks[rates.index(plan.sample_rate)]
                if len(block):
                    for window, samples in windower.push(block):
                        send(("window", task.ticket, view, window, samples, False, 0))
        for view, windower in zip(task.views, windowers):
            cuts = list(windower.finish())
            for number, (window, samples) in enumerate(cuts):
                last = number == len(cuts) - 1
                send(("window", task.ticket, view, window, samples, last, windower.total if last else 0))
        send(("done", task.ticket))
    except DecodeError as exc:
        send(("error", task.ticket, str(exc)))
    except Exception as exc:  # a decoder bug must not end the shard
        send(("error", task.ticket, f"decoding failed: {type(exc).__name__}: {exc}"))


def _trace(task: Task) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{task.label}\t{','.join(map(str, task.views))}\n")


def _decoder_main(worker: int, plans: list[WindowPlan], tasks, results) -> None:
    # The parent decides when to stop. SLURM signals every process of a job step: a time-limit
    # warning (USR2) or a TERM must not kill a decoder, or its file would become an error record.
    for number in (signal.SIGINT, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    from audiomill.runner.process import die_with_parent, quiet_native_stderr

    die_with_parent()
    quiet_native_stderr()
    while (task := tasks.get()) is not None:
        results.put(("begin", worker, task.ticket))
        decode_task(task, plans, results.put)


class DecodePool:
    """``workers`` decoding processes fed from a bounded task queue; results on :attr:`results`.

    ``plans`` are the views (one per distinct stage window plan); a task names those it needs."""

    def __init__(self, workers: int, plans: list[WindowPlan]) -> None:
        self.plans = list(plans)
        self._ctx = mp.get_context("spawn")
        self.tasks: Any = self._ctx.Queue(maxsize=2 * workers)
        self.results: Any = self._ctx.Queue(maxsize=4 * workers + 4)
        self._procs: list[Any] = [None] * workers
        self.current: dict[int, int] = {}  # worker -> ticket it is decoding
        for worker in range(workers):
            self._start(worker)

    def _start(self, worker: int) -> None:
        proc = self._ctx.Process(target=_decoder_main, args=(worker, self.plans, self.tasks, self.results),
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
        elif message[0] in ("done", "error"):
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


