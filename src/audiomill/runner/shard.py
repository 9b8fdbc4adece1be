"""Shards, start to finish: source -> decode pool -> stage -> sink, resumable per file.

A feeder thread reads shards in order (lock, resume point, items) and hands their
files to the decode pool; the calling thread takes windows from the pool as they
come, batches and encodes them, and writes each file's record to its shard's sink.
As soon as one shard is fully handed out the feeder starts on the next, so the
decoders keep working while the last batches of a shard are encoded.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from audiomill.errors import ShardError
from audiomill.items import Item, Shard
from audiomill.runner.decode import DecodePool, Task, task_source
from audiomill.runner.state import OutputFolder, ShardLock
from audiomill.sinks.jsonl import JsonlSink
from audiomill.sources import read_shard
from audiomill.stages import Output
from audiomill.stages.tokenize import FileState, TokenizeStage

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]


@dataclass
class ShardResult:
    name: str
    status: str  # "done" (this run finished it), "complete" (already was), "held", "failed"
    stats: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass
class _Run:
    """A shard being written: its sink and lock, and how many of its files are still on the way."""

    shard: Shard
    sink: JsonlSink
    lock: ShardLock
    started: float
    done: set[str] = field(default_factory=set)  # keys already written by an earlier run
    order: list[str] = field(default_factory=list)
    submitted: int = 0  # files handed out (written by the feeder only)
    decoding: int = 0  # files whose windows have not all arrived
    finished: int = 0  # files whose record or error is written (written by the consumer only)
    fed: bool = False
    failed: bool = False


def error_record(item: Item, reason: str) -> dict[str, Any]:
    return {"key": item.key, "tar_file": item.source, "audio_file": item.audio_file, "error": reason}


class ShardProcessor:
    """Runs shards through one stage, in one process; owns the decode pool."""

    def __init__(self, folder: OutputFolder, stage: TokenizeStage, decode_workers: int, holder: str = "") -> None:
        from audiomill.runner.decode import WindowPlan

        self.folder = folder
        self.stage = stage
        self.holder = holder
        codec = stage.codec
        plan = WindowPlan(codec.sample_rate, stage.window, stage.overlap, codec.alignment)
        self.pool = DecodePool(max(1, decode_workers), plan)

    def close(self) -> None:
        self.pool.close()
        self.stage.close()

    def run(self, shard: Shard, retry_errors: bool, report: Report) -> ShardResult:
        return next(iter(self.run_shards([shard], retry_errors, report)))

    def run_shards(self, shards: Iterable[Shard], retry_errors: bool, report: Report,
                   stop: threading.Event | None = None) -> Iterator[ShardResult]:
        """Process ``shards`` in order, the next one's files decoding while this one's are encoded.

        Once ``stop`` is set (a time limit or preemption is near), the batch being encoded is
        written, then the shards in hand are left resumable and their locks released.
        """
        control: queue.Queue = queue.Queue()
        consumer = _Consumer(self, report)
        quit_feeding = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(shards, retry_errors, control, consumer, quit_feeding),
                                  name="audiomill-feeder", daemon=True)
        feeder.start()
        try:
            ended = False
            while not (ended and not consumer.runs):
                if stop is not None and stop.is_set():
                    consumer.deliver_encoded()
                    if consumer.runs:
                        log.info("stopping: leaving %s resumable", ", ".join(r.shard.name for r in consumer.runs))
                    break
                while True:
                    try:
                        message = control.get_nowait()
                    except queue.Empty:
                        break
                    if message[0] == "end":
                        ended = True
                    elif message[0] == "crash":
                        raise message[1]
                    else:
                        yield from consumer.control(message)
                busy = bool(consumer.runs) and any(run.decoding for run in consumer.runs)
                decoded = self.pool.get(timeout=0.02 if busy or not ended else 0.2)
                if decoded is not None:
                    yield from consumer.decoded(decoded)
                elif ended or not busy:
                    yield from consumer.idle()
        finally:
            with consumer.guard:  # the feeder locks no shard after this without releasing it
                quit_feeding.set()
                consumer.abandon()

    def _feed(self, shards, retry_errors, control: queue.Queue, consumer: "_Consumer", stop: threading.Event) -> None:
        counter = itertools.count()
        try:
            for shard in shards:
                if stop.is_set():
                    break
                run = self._open(shard, retry_errors, control)
                if run is None:
                    continue
                with consumer.guard:
                    if stop.is_set():
                        run.sink.close()
                        run.lock.release()
                        return
                    consumer.opened.append(run)
                control.put(("run", run))
                done = run.done
                try:
                    for item in read_shard(shard, want=lambda key: key not in done):
                        if stop.is_set():
                            return
                        run.order.append(item.key)
                        if item.skipped:
                            continue
                        ticket = next(counter)
                        consumer.owner[id(item)] = run
                        consumer.tickets[ticket] = (run, self.stage.begin(item))
                        run.submitted += 1
                        run.decoding += 1
                        if item.error is not None:
                            control.put(("file_error", ticket, item.error))
                        else:
                            self.pool.submit(Task(ticket, task_source(item), item.offset, item.duration))
                            item.data = None
                except ShardError as exc:
                    control.put(("shard_error", run, str(exc)))
                    continue
                control.put(("fed", run))
        except BaseException as exc:  # the consumer re-raises it
            control.put(("crash", exc))
        finally:
            control.put(("end",))

    def _open(self, shard: Shard, retry_errors: bool, control: queue.Queue) -> _Run | None:
        lock = self.folder.try_lock(shard.name, self.holder)
        if lock is None:
            control.put(("result", ShardResult(shard.name, "held", reason="another process holds it")))
            return None
        stats = self.folder.done_stats(shard.name)
        if stats is not None and not (retry_errors and stats.get("errors", 0) > 0):
            lock.release()
            control.put(("result", ShardResult(shard.name, "complete", stats)))
            return None
        if stats is not None:
            self.folder.unmark_done(shard.name)
        sink = JsonlSink(self.folder.out, shard.name)
        done = sink.open(retry_errors)
        if done:
            log.info("%s: resuming, %d files already written", shard.name, len(done))
        return _Run(shard, sink, lock, time.time(), done)


class _Consumer:
    """The calling thread's side: windows into the stage, outputs into their shard's sink."""

    def __init__(self, processor: ShardProcessor, report: Report):
        self.stage = processor.stage
        self.folder = processor.folder
        self.report = report
        # both filled by the feeder thread as it hands files out
        self.tickets: dict[int, tuple[_Run, FileState]] = {}
        self.owner: dict[int, _Run] = {}  # id(item) -> its run
        self.runs: list[_Run] = []
        # Every shard the feeder locks is registered under this guard, so that an early stop frees them
        # all, even one locked while the consumer was leaving (a reused Ray worker process lives on).
        self.guard = threading.Lock()
        self.opened: list[_Run] = []

    def _close(self, run: _Run) -> None:
        with self.guard:
            if run in self.opened:
                self.opened.remove(run)
        run.lock.release()

    def control(self, message: tuple) -> Iterator[ShardResult]:
        kind = message[0]
        if kind == "result":
            yield message[1]
        elif kind == "run":
            self.runs.append(message[1])
        elif kind == "fed":
            message[1].fed = True
            yield from self._settle()
        elif kind == "file_error":
            run, state = self.tickets.pop(message[1])
            run.decoding -= 1
            self._deliver(self.stage.fail(state, message[2]))
        elif kind == "shard_error":
            run, reason = message[1], message[2]
            run.failed = True
            run.sink.close()
            self.folder.mark_failed(run.shard.name, reason)
            self._close(run)
            self.runs.remove(run)
            log.error("%s: %s", run.shard.name, reason)
            yield ShardResult(run.shard.name, "failed", reason=reason)

    def decoded(self, message: tuple) -> Iterator[ShardResult]:
        kind, ticket = message[0], message[1]
        if kind == "begin" or ticket not in self.tickets:
            return
        run, state = self.tickets[ticket]
        if kind == "error":
            del self.tickets[ticket]
            run.decoding -= 1
            outputs = self.stage.fail(state, message[2])
        else:
            _, _, window, samples, last, num_samples = message
            if last:
                del self.tickets[ticket]
                run.decoding -= 1
            outputs = self.stage.add_window(state, len(state.windows), window, samples, last, num_samples)
        self._deliver(outputs)
        yield from self._settle()

    def deliver_encoded(self) -> None:
        """Write what the stage has already encoded (stopping: what waits for a batch stays undone)."""
        self._deliver(self.stage.drain())

    def idle(self) -> Iterator[ShardResult]:
        """Nothing is arriving: encode what waits for its batch to fill."""
        if self.stage.waiting:
            self._deliver(self.stage.flush())
        yield from self._settle()

    def _settle(self) -> Iterator[ShardResult]:
        """Flush the batches of shards whose files have all been decoded; finish complete shards."""
        if any(run.fed and not run.decoding and run.finished < run.submitted for run in self.runs):
            if self.stage.waiting:
                self._deliver(self.stage.flush())
        for run in list(self.runs):
            if run.fed and run.finished == run.submitted:
                yield self._finish(run)

    def _deliver(self, outputs: list[Output]) -> None:
        touched: dict[int, tuple[_Run, dict[str, float]]] = {}
        for output in outputs:
            run = self.owner.pop(id(output.item))
            if run.failed:
                continue
            counts = touched.setdefault(id(run), (run, {"files": 0, "errors": 0, "audio_seconds": 0.0}))[1]
            if output.record is not None:
                run.sink.write(output.record)
                counts["files"] += 1
                counts["audio_seconds"] += output.audio_seconds
            else:
                run.sink.write_error(error_record(output.item, output.error or "unknown error"))
                counts["errors"] += 1
            run.finished += 1
        for run, counts in touched.values():
            run.sink.flush()
            self.report({"event": "progress", "shard": run.shard.name, **counts})

    def _finish(self, run: _Run) -> ShardResult:
        self.runs.remove(run)
        stats: dict[str, Any] = run.sink.finish(run.order)
        stats.update(shard=run.shard.name, source=run.shard.path, wall_seconds=round(time.time() - run.started, 3),
                     finished=time.time(), host=os.uname().nodename)
        self.folder.mark_done(run.shard.name, stats)
        self._close(run)
        log.info("shard %s complete: %d files, %d errors, %.1f s audio in %.1f s", run.shard.name, stats["items"],
                 stats["errors"], stats["audio_seconds"], stats["wall_seconds"])
        return ShardResult(run.shard.name, "done", stats)

    def abandon(self) -> None:
        """The run is ending (call with :attr:`guard` held): keep what is written, it is resumable,
        and free every lock still held."""
        for run in self.opened:
            run.sink.close()
            run.lock.release()
        self.opened.clear()
        self.runs.clear()
