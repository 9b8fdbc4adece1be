"""The decode pool: processes that turn items into the windows each stage wants, while models run.

Each process takes a task (a file to decode), decodes it once, block by block, resamples
each block once per distinct rate its views ask for, and cuts every view's windows with a
:class:`~audiomill.chunking.Windower` of its own. A view is one stage's (rate, window,
overlap, alignment); stages that want the same view share it. Each window is sent as soon
as it is cut, so a two-hour file never sits whole in memory. Queues are
bounded both ways: reading stops when the decoders are busy, decoders stop when
the encoder is behind. A decoder that dies (a crash inside a native library on a
hostile file) costs its current file an error record and is replaced.

Windows travel through shared memory, not the pipe: each decoder writes its windows'
samples into a ring of its own (:class:`WindowRing`, an anonymous ``memfd`` the pool
creates and the decoder maps), and the message carries only where they are. The pool copies
them out as it takes the message and moves the ring's read mark on; a decoder waits while
its ring is full. (Where there is no ``memfd``, or for a window over half a ring, the
samples go in the message, pickled.)

A view may carry a ``featurizer`` (see :mod:`audiomill.features`): the decoder then sends each
window as the model's inputs, computed here from its samples, their arrays through the ring
the same way. If they fail, the window goes as samples, for the stage to compute them (and
fail, if it must, where its guard sees it).

Messages to the consumer, tagged with the task's ticket:

- ``("begin", worker, ticket)`` the worker took the task;
- ``("window", ticket, view, window, samples, last, num_samples)`` one window of one view
  (``samples``: a :class:`~audiomill.features.Features` where the view has a featurizer);
  ``num_samples`` (the file's length at the view's rate) is set on the view's last one;
- ``("done", ticket)`` every window of every view has been sent;
- ``("error", ticket, reason)`` the file cannot be used (after zero or more windows).
"""

from __future__ import annotations

import logging
import mmap
import os
import multiprocessing as mp
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from typing import Any

import numpy as np

from audiomill.audio import ByteRange, Source, open_audio
from audiomill.chunking import Windower
from audiomill.errors import DecodeError
from audiomill.features import Features

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowPlan:
    sample_rate: int
    window: int  # samples; 0 = never split
    overlap: int
    alignment: int
    featurizer: Any = None  # a picklable callable, samples -> model inputs (see audiomill.features)


@dataclass(frozen=True)
class Task:
    ticket: int
    source: Source
    offset: float | None = None
    duration: float | None = None
    views: tuple[int, ...] = (0,)  # the views this file is wanted in
    label: str = ""  # shard/key, for the trace


TRACE_ENV = "AUDIOMILL_TRACE_DECODES"  # a file each decode appends a line to: what was decoded, and how often
RING_BYTES = 16 << 20  # each decoder's shared ring (a 60 s window at 24 kHz is 5.8 MB)
_HEADER = 64  # the ring's first bytes: how far the pool has read (uint64)


class WindowRing:
    """Shared memory that one decoder writes windows into and the pool reads them out of.

    An anonymous ``memfd``: nothing is left in ``/dev/shm`` if the run is killed. The decoder
    opens it as ``/proc/<pool pid>/fd/<fd>`` (:meth:`path`). Bytes are counted from the start,
    never reset: the decoder writes at ``head``, the pool has read up to ``read`` (kept in the
    header), and the decoder never lets ``head`` run more than the ring's size ahead of it."""

    def __init__(self, size: int = RING_BYTES) -> None:
        self.size = size
        self.fd = os.memfd_create("audiomill-windows", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, _HEADER + size)
        self._map = mmap.mmap(self.fd, _HEADER + size)
        self._read = np.frombuffer(self._map, np.uint64, 1, 0)

    @property
    def path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def take(self, place: tuple) -> np.ndarray:
        """The array at ``place`` (from :meth:`RingWriter.put`), copied out; the space is free again."""
        _, _, offset, end, dtype, shape = place
        count = int(np.prod(shape))
        array = np.frombuffer(self._map, np.dtype(dtype), count, _HEADER + offset).reshape(shape).copy()
        self._read[0] = end
        return array

    def close(self) -> None:
        del self._read
        self._map.close()
        os.close(self.fd)


def open_ring(size: int = RING_BYTES) -> WindowRing | None:
    try:
        return WindowRing(size)
    except (AttributeError, OSError):  # no memfd here: windows go pickled
        return None


class RingWriter:
    """The decoder's side of a :class:`WindowRing`."""

    def __init__(self, path: str, size: int, generation: int) -> None:
        self.size = size
        self.generation = generation
        with open(path, "r+b") as handle:
            self._map = mmap.mmap(handle.fileno(), _HEADER + size)
        self._read = np.frombuffer(self._map, np.uint64, 1, 0)
        self._head = 0

    def put(self, array: np.ndarray) -> tuple | np.ndarray:
        """Write ``array`` (samples, or one of a window's features) into the ring, waiting for room;
        where it is. One too large for the ring, empty, or not of numbers, is returned to go in the
        message as it is."""
        if array.dtype.kind not in "fiub" or not 0 < array.nbytes <= self.size // 2:
            return array
        span = -(-array.nbytes // 8) * 8  # every array starts 8-byte aligned
        offset = self._head % self.size
        if offset + span > self.size:  # it would not fit before the end: start again at 0
            self._head += self.size - offset
            offset = 0
        end = self._head + span
        while end - int(self._read[0]) > self.size:
            time.sleep(0.0005)  # the pool has not read far enough yet
        np.frombuffer(self._map, array.dtype, array.size, _HEADER + offset).reshape(array.shape)[...] = array
        self._head = end
        return ("ring", self.generation, offset, end, array.dtype.str, array.shape)

    def put_window(self, window: np.ndarray | Features) -> tuple | np.ndarray | Features:
        """:meth:`put` for a window: its samples, or each of its features' arrays (all in the message
        if together they would fill over half the ring, which they wait in until the message goes)."""
        if isinstance(window, Features):
            if sum(a.nbytes for a in window.arrays.values()) > self.size // 2:
                return window
            return Features(window.num_samples, {name: self.put(a) for name, a in window.arrays.items()})
        return self.put(window)


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
                        send(("window", task.ticket, view, window, _shown(plan, samples), False, 0))
        for view, plan, windower in zip(task.views, views, windowers):
            cuts = list(windower.finish())
            for number, (window, samples) in enumerate(cuts):
                last = number == len(cuts) - 1
                send(("window", task.ticket, view, window, _shown(plan, samples), last, windower.total if last else 0))
        send(("done", task.ticket))
    except DecodeError as exc:
        send(("error", task.ticket, str(exc)))
    except Exception as exc:  # a decoder bug must not end the shard
        send(("error", task.ticket, f"decoding failed: {type(exc).__name__}: {exc}"))


def _shown(plan: WindowPlan, samples: np.ndarray) -> np.ndarray | Features:
    """A window as its view wants it: its samples, or the model inputs computed from them."""
    if plan.featurizer is None:
        return samples
    try:
        return Features(len(samples), plan.featurizer(samples))
    except Exception:  # the stage computes them again and reports what is wrong (see the module docstring)
        return samples


def _trace(task: Task) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{task.label}\t{','.join(map(str, task.views))}\n")


def _decoder_main(worker: int, plans: list[WindowPlan], tasks, results, ring: tuple | None = None) -> None:
    """``tasks`` and ``results``: this decoder's own ends of two pipes (no lock shared with another
    decoder, so that one killed at any moment never blocks the others)."""
    # The parent decides when to stop. SLURM signals every process of a job step: a time-limit
    # warning (USR2) or a TERM must not kill a decoder, or its file would become an error record.
    for number in (signal.SIGINT, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    from audiomill.runner.process import die_with_parent, quiet_native_stderr

    die_with_parent()
    quiet_native_stderr()
    if any(plan.featurizer is not None for plan in plans):
        import torch  # (an extractor's tensors) one thread a decoder: the decoders share the cores

        torch.set_num_threads(1)
    send = results.send
    try:
        writer = RingWriter(*ring) if ring is not None else None
    except OSError:  # the pool's ring cannot be opened from here: windows go pickled
        writer = None
    if writer is not None:

        def send(message: tuple) -> None:
            if message[0] == "window":
                message = message[:4] + (writer.put_window(message[4]),) + message[5:]
            results.send(message)

    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):  # the pool is gone
            return
        if task is None:
            return
        results.send(("begin", worker, task.ticket))
        decode_task(task, plans, send)


class DecodePool:
    """``workers`` decoding processes, each given at most ``depth`` tasks at a time (and, past its
    first, at most ``held_bytes`` of files handed over as bytes); :meth:`get` takes what they send.

    A task stays given until its ``done`` is taken, so a decoder works at most ``depth - 1`` files
    ahead of what is consumed: with 2, a short file followed by a longer one left the consumer
    waiting for the decoder (4 cut that wait in ``bench --stage vad`` from 0.3 to 0.1 s of a 3 s run).

    Each decoder has a pipe of its own each way: a decoder killed at any moment (mid-message
    included) breaks only its own pipes, where a queue shared by all would stay locked by it.
    The tasks it had not begun go to its replacement.

    ``plans`` are the views (one per distinct stage window plan); a task names those it needs."""

    def __init__(self, workers: int, plans: list[WindowPlan], depth: int = 4, held_bytes: int = 64 << 20) -> None:
        self.plans = list(plans)
        self.depth = depth
        self.held_bytes = held_bytes
        self._ctx = mp.get_context("spawn")
        self._procs: list[Any] = [None] * workers
        self._to: list[Any] = [None] * workers  # the pool's end of each decoder's task pipe
        self._from: list[Any] = [None] * workers  # ... and of its result pipe
        self._given: list[list[Task]] = [[] for _ in range(workers)]  # tasks each decoder has, in order
        self._room = threading.Condition()
        self._closed = False
        self.current: dict[int, int] = {}  # worker -> ticket it is decoding
        # a ring per decoder started (a replaced decoder gets a new one: the old one's windows may still come)
        self._rings: dict[int, WindowRing] = {}
        self.shared_windows = 0  # windows that came through a ring (the others came pickled)
        for worker in range(workers):
            self._start(worker)

    def _start(self, worker: int) -> None:
        ring = open_ring()
        place = None
        if ring is not None:
            generation = len(self._rings)
            self._rings[generation] = ring
            place = (ring.path, ring.size, generation)
        task_out, task_in = self._ctx.Pipe()
        result_out, result_in = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=_decoder_main, args=(worker, self.plans, task_in, result_in, place),
                                 name=f"audiomill-decode-{worker}", daemon=True)
        proc.start()
        task_in.close()  # the decoder's ends: once it dies, reading its results ends (EOF)
        result_in.close()
        self._procs[worker], self._to[worker], self._from[worker] = proc, task_out, result_out

    def submit(self, task: Task) -> None:
        """Give ``task`` to the decoder with the fewest; wait while every one has ``depth``."""
        with self._room:
            while not self._closed and not any(self._has_room(g, task) for g in self._given):
                self._room.wait(0.5)
            if self._closed:
                return
            worker = min((w for w in range(len(self._given)) if self._has_room(self._given[w], task)),
                         key=lambda w: len(self._given[w]))
            self._given[worker].append(task)
            pipe = self._to[worker]
        try:
            pipe.send(task)
        except OSError:  # it has just died: _reap gives the task to its replacement
            pass

    def _has_room(self, given: list[Task], task: Task) -> bool:
        if not given:
            return True
        held = sum(len(t.source) for t in given if isinstance(t.source, bytes))
        size = len(task.source) if isinstance(task.source, bytes) else 0
        return len(given) < self.depth and (not size or held + size <= self.held_bytes)

    def get(self, timeout: float) -> tuple | None:
        """The next message, or None after ``timeout`` seconds; replaces dead decoders as it goes."""
        ready = wait_for([c for c in self._from if c is not None], timeout)
        if not ready:
            return None
        conn = ready[0]
        worker = self._from.index(conn)
        try:
            message = conn.recv()
        except (EOFError, OSError):  # its decoder is dead, and everything it sent is read
            return self._reap(worker)
        if message[0] == "window" and isinstance(message[4], (tuple, Features)):
            message = message[:4] + (self._taken(message[4]),) + message[5:]
        elif message[0] == "begin":
            self.current[message[1]] = message[2]
        elif message[0] in ("done", "error"):
            if self.current.get(worker) == message[1]:
                del self.current[worker]
            with self._room:
                self._given[worker] = [t for t in self._given[worker] if t.ticket != message[1]]
                self._room.notify_all()
        return message

    def _taken(self, window: tuple | Features) -> np.ndarray | Features:
        """A window whose arrays are in a ring (a place, or features holding places), copied out."""
        if isinstance(window, Features):
            places = {name: a for name, a in window.arrays.items() if isinstance(a, tuple)}
            if not places:
                return window
            arrays = {name: self._rings[a[1]].take(a) if name in places else a for name, a in window.arrays.items()}
            window = Features(window.num_samples, arrays)
        else:
            window = self._rings[window[1]].take(window)
        self.shared_windows += 1
        return window

    def _reap(self, worker: int) -> tuple | None:
        """A decoder died (its result pipe ended): start another; its file is an error."""
        proc = self._procs[worker]
        proc.join(timeout=5)
        code = proc.exitcode
        ticket = self.current.pop(worker, None)
        log.warning("decoder %d died (exit code %s); starting another", worker, code)
        with self._room:  # what it had not begun goes to its replacement (a task given meanwhile: once)
            self._from[worker].close()
            self._to[worker].close()
            self._start(worker)
            self._given[worker] = [t for t in self._given[worker] if t.ticket != ticket]
            waiting = list(self._given[worker])
            self._room.notify_all()
        for task in waiting:
            self._to[worker].send(task)
        if ticket is None:
            return None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return ("error", ticket, f"the decoder crashed on this file ({how})")

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.pid]

    def close(self) -> None:
        with self._room:
            self._closed = True
            self._room.notify_all()
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()  # decoders ignore TERM (see _decoder_main) and hold nothing to save
        for proc in self._procs:
            proc.join(timeout=5)
        for conn in self._to + self._from:
            if conn is not None:
                conn.close()
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()


def task_source(item) -> Source:
    if item.member_range is not None:
        return ByteRange(item.source, *item.member_range)
    if item.data is not None:
        return item.data
    return item.path


