"""Shards, start to finish: source -> decode pool -> stages -> a sink per stage, resumable per file.

Three threads. A feeder thread reads shards in order (lock, resume point per stage, items)
and hands each file to the decode pool once, naming the views (rate and windows) of the
stages that still need it. The calling thread takes windows from the pool as they come and
gives each to the stages of its view; what a stage returns goes to a writer thread
(:class:`_Writer`), which serialises the records into that stage's sink for the shard, and
finishes shards: so the thread that feeds the model never waits on JSON, Parquet or the
disk. A file is finished when every stage that needed it has handed it over; a shard, when
all its files are, and then (after its records, in the writer's order) each of its stages'
outputs is finished and marked done. As soon as one shard is fully handed out the feeder
starts on the next, so the decoders keep working while the last batches of a shard are
computed.

The runner knows the Stage and Sink protocols only: it routes what stages return by the
file's ticket (its shard and key), and counts files, errors and audio seconds as they
pass.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from audiomill.errors import DiskFull, ShardError, is_disk_full
from audiomill.items import Item, Shard, SourceDamage
from audiomill.runner.decode import DecodePool, Task, WindowPlan, task_source
from audiomill.runner.state import OutputFolder, ShardLock, source_identity
from audiomill.sinks import get_format
from audiomill.sinks.journal import ShardSink
from audiomill.sources import read_shard
from audiomill.stages import FileOutput, Stage

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]


@dataclass
class ShardResult:
    name: str
    status: str  # "done" (this run finished it), "complete" (already was), "damaged", "held", "failed"
    stats: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass
class StageOutput:
    """A stage and where its records go: the output group (``""``: the output folder itself)."""

    stage: Stage
    group: str = ""
    view: int = 0  # the decode view it takes its windows from


@dataclass
class _Run:
    """A shard being written: its lock, a sink per stage still to do, and its files on the way."""

    shard: Shard
    lock: ShardLock
    started: float
    sinks: dict[int, ShardSink]  # output index -> its sink, for the outputs this shard still needs
    done: dict[int, set[str]]  # output index -> keys already written by an earlier run
    order: list[str] = field(default_factory=list)  # every key, in the shard's order (damage records too)
    files: list[tuple[str, str]] = field(default_factory=list)  # (key, audio file) of each item, by its index
    damage: list[str] = field(default_factory=list)  # what the source found damaged
    untrusted: tuple[int, str] | None = None  # items from this index on may be from damaged data: why
    submitted: int = 0  # files handed out (written by the feeder only)
    decoding: int = 0  # files whose windows have not all arrived
    finished: int = 0  # files written by every stage that needed them (written by the consumer only)
    fed: bool = False
    failed: bool = False
    finishing: bool = False  # handed to the writer to finish

    def wants(self, key: str) -> bool:
        return any(key not in keys for keys in self.done.values())


@dataclass
class _File:
    """One file in flight: its run, and the state of each stage that still has to write it."""

    run: _Run
    item: Item
    states: dict[int, Any]
    pending: set[int]
    windows: dict[int, int]  # output index -> windows given to it so far
    decoded: bool = False


def _stop_if_disk_full(exc: BaseException, out: str) -> None:
    """A full disk is no fault of one shard: the run stops, and every shard is left resumable."""
    if is_disk_full(exc):
        raise DiskFull(out) from exc


def _with_traceback(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))}"


def error_record(item: Item, reason: str) -> dict[str, Any]:
    return {"key": item.key, "tar_file": item.source, "audio_file": item.audio_file, "error": reason}


def merge_stats(per_group: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A shard's stats over its outputs: the first output's counts, every output's errors, and each one's."""
    if len(per_group) == 1:
        return dict(next(iter(per_group.values())))
    first = next(iter(per_group.values()))
    return {**first, "errors": sum(s.get("errors", 0) for s in per_group.values()), "groups": per_group}


class ShardProcessor:
    """Runs shards through one or more stages, in one process; owns the decode pool.

    ``stages``: one stage (its records go into the output folder itself) or
    :class:`StageOutput`\\ s, each writing into its own group."""

    def __init__(self, folder: OutputFolder, stages: Stage | list[StageOutput], decode_workers: int,
                 holder: str = "", fmt: str = "jsonl") -> None:
        self.folder = folder
        self.outputs = list(stages) if isinstance(stages, list) else [StageOutput(stages)]
        self.fmt = get_format(fmt)
        self.holder = holder
        views: list[WindowPlan] = []
        for output in self.outputs:
            stage = output.stage
            view = WindowPlan(stage.sample_rate, stage.window, stage.overlap, stage.alignment,
                              getattr(stage, "featurizer", None))
            if view not in views:
                views.append(view)
            output.view = views.index(view)
        self.pool = DecodePool(max(1, decode_workers), views)

    def close(self) -> None:
        self.pool.close()
        for output in self.outputs:
            output.stage.close()

    def run(self, shard: Shard, retry_errors: bool, report: Report) -> ShardResult:
        return next(iter(self.run_shards([shard], retry_errors, report)))

    def run_shards(self, shards: Iterable[Shard], retry_errors: bool, report: Report,
                   stop: threading.Event | None = None) -> Iterator[ShardResult]:
        """Process ``shards`` in order, the next one's files decoding while this one's are computed.

        Once ``stop`` is set (a time limit or preemption is near), what is computed is
        written, then the shards in hand are left resumable and their locks released.
        """
        control: queue.Queue = queue.Queue()
        consumer = _Consumer(self, report, _Writer(control, self.folder.out))
        quit_feeding = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(shards, retry_errors, control, consumer, quit_feeding),
                                  name="audiomill-feeder", daemon=True)
        feeder.start()
        try:
            ended = False
            while not (ended and not consumer.runs and not consumer.finishing):
                if stop is not None and stop.is_set():
                    consumer.deliver_computed()
                    yield from consumer.written()
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
                if ended and not consumer.runs:
                    consumer.writer.wait()  # the shards being finished: their results come next
                    continue
                busy = any(run.decoding for run in consumer.runs)
                decoded = self.pool.get(timeout=0.02 if busy or not ended else 0.2)
                if decoded is not None:
                    consumer.decoded(decoded)
                elif ended or not busy:
                    consumer.idle(ended and not busy)
        finally:
            consumer.writer.close()  # what is handed over is written first, then the shards are let go
            with consumer.guard:  # the feeder locks no shard after this without releasing it
                quit_feeding.set()
                consumer.abandon()

    def _feed(self, shards, retry_errors, control: queue.Queue, consumer: "_Consumer", stop: threading.Event) -> None:
        counter = itertools.count()
        try:
            for shard in shards:
                if stop.is_set():
                    break
                try:
                    run = self._open(shard, retry_errors, control)
                except Exception as exc:  # its output cannot be opened: this shard fails, the others go on
                    _stop_if_disk_full(exc, self.folder.out)
                    reason = _with_traceback(exc)
                    self.folder.mark_failed(shard.name, reason)
                    log.error("shard %s failed: %s", shard.name, reason)
                    control.put(("result", ShardResult(shard.name, "failed", reason=reason)))
                    continue
                if run is None:
                    continue
                with consumer.guard:
                    if stop.is_set():
                        _release(run)
                        return
                    consumer.opened.append(run)
                control.put(("run", run))
                try:
                    for item in read_shard(shard, want=run.wants):
                        if stop.is_set():
                            return
                        if isinstance(item, SourceDamage):
                            self._damaged(run, item, control)
                            continue
                        run.order.append(item.key)
                        run.files.append((item.key, item.audio_file))
                        if item.skipped:
                            continue
                        self._hand_out(run, item, next(counter), control, consumer)
                except ShardError as exc:
                    control.put(("shard_error", run, str(exc)))
                    continue
                except Exception as exc:  # anything else while reading one shard fails that shard alone
                    control.put(("shard_error", run, _with_traceback(exc)))
                    continue
                control.put(("fed", run))
        except BaseException as exc:  # the consumer re-raises it
            control.put(("crash", exc))
        finally:
            control.put(("end",))

    def _damaged(self, run: _Run, damage: SourceDamage, control: queue.Queue) -> None:
        """The source found damage: the shard will not be complete; the damage is an error record."""
        log.warning("%s: %s", run.shard.name, damage.reason)
        run.damage.append(damage.reason)
        if damage.untrusted_from is not None and run.untrusted is None:
            run.untrusted = (damage.untrusted_from, damage.reason)
        if damage.key not in run.order:
            run.order.append(damage.key)
            record = {"key": damage.key, "tar_file": run.shard.path, "audio_file": damage.audio_file,
                      "error": damage.reason, "position": damage.position}
            control.put(("damage", run, record))

    def _hand_out(self, run: _Run, item: Item, ticket: int, control: queue.Queue, consumer: "_Consumer") -> None:
        """One file to decode, once, for every stage of this shard that has not written it yet."""
        needing = [i for i, keys in run.done.items() if item.key not in keys]
        states = {i: self.outputs[i].stage.begin(ticket, item) for i in needing}
        consumer.files[ticket] = _File(run, item, states, set(needing), {i: 0 for i in needing})
        run.submitted += 1
        run.decoding += 1
        if item.error is not None:
            control.put(("file_error", ticket, item.error))
            return
        views = tuple(sorted({self.outputs[i].view for i in needing}))
        self.pool.submit(Task(ticket, task_source(item), item.offset, item.duration, views,
                              f"{run.shard.name}/{item.key}"))
        item.data = None

    def _open(self, shard: Shard, retry_errors: bool, control: queue.Queue) -> _Run | None:
        lock = self.folder.try_lock(shard.name, self.holder)
        if lock is None:
            control.put(("result", ShardResult(shard.name, "held", reason="another process holds it")))
            return None
        try:
            return self._resume(shard, lock, retry_errors, control)
        except BaseException:
            lock.release()
            raise

    def _resume(self, shard: Shard, lock: ShardLock, retry_errors: bool, control: queue.Queue) -> _Run | None:
        """The locked shard's outputs still to write, opened where an earlier run left them."""
        todo: dict[int, dict[str, Any] | None] = {}
        complete: dict[str, dict[str, Any]] = {}
        damaged: list[str] = []
        sinks: dict[int, ShardSink] = {}
        for index, output in enumerate(self.outputs):
            sinks[index] = ShardSink(self.folder.group_dir(output.group), shard.name, self.fmt, output.stage.fields,
                                     self.folder.schema(output.group), getattr(output.stage, "members", None),
                                     getattr(output.stage, "file_key", "key"))
            stats = self.folder.done_stats(shard.name, output.group)
            damage = self.folder.damage(shard.name, output.group, stats, self.fmt) if stats is not None else None
            if damage:
                log.warning("%s%s was complete, but %s: writing it again", shard.name,
                            f" ({output.group})" if output.group else "", damage)
                self.folder.unmark_done(shard.name, output.group)
                sinks[index].discard()
                stats = None
            if stats is not None and stats.get("damaged"):
                if stats.get("source_file") == source_identity(shard.path):
                    damaged.extend(reason for reason in stats["damaged"] if reason not in damaged)
                    complete[output.group] = stats  # found damaged, and reading the same file again finds the same
                    sinks[index].cleanup()
                    continue
                log.warning("%s was damaged, and %s has changed since: reading it again", shard.name, shard.path)
                self.folder.unmark_done(shard.name, output.group)
                sinks[index].discard()
                stats = None
            if stats is None or (retry_errors and stats.get("errors", 0) > 0):
                todo[index] = stats
            else:
                complete[output.group] = stats
                sinks[index].cleanup()  # journals a run killed between the done marker and their removal left
        if not todo:
            lock.release()
            status = "damaged" if damaged else "complete"
            control.put(("result", ShardResult(shard.name, status, merge_stats(complete), "; ".join(damaged))))
            return None
        done: dict[int, set[str]] = {}
        for index, previous in todo.items():
            if previous is not None:
                self.folder.unmark_done(shard.name, self.outputs[index].group)
            done[index] = sinks[index].open(retry_errors, previous)
        sinks = {index: sinks[index] for index in todo}
        resumed = {self.outputs[i].group or "output": len(keys) for i, keys in done.items() if keys}
        if resumed:
            log.info("%s: resuming, files already written: %s", shard.name,
                     ", ".join(f"{n} in {g}" for g, n in resumed.items()))
        return _Run(shard, lock, time.time(), sinks, done)


def _release(run: _Run) -> None:
    _close_sinks(run)
    run.lock.release()


def _close_sinks(run: _Run) -> None:
    """Close a shard's journals, leaving it resumable: a line that cannot be flushed any more (a full
    disk) is a torn line, which the next run cuts off and writes again."""
    for sink in run.sinks.values():
        try:
            sink.close()
        except OSError:
            pass


class _Writer:
    """A thread that runs writing jobs (a batch's records into the sinks, a shard's finishing) in
    the order they come, so that the calling thread goes back to the model at once.

    A job tells the calling thread what happened through ``control``: ``("report", event)``,
    ``("write_failed", run, reason)`` (that shard fails alone), ``("finished", result)``; a full
    disk is ``("crash", DiskFull)``, which stops the run. Jobs wait in a bounded queue: a writer
    behind holds the model back, not memory."""

    def __init__(self, control: queue.Queue, out: str, depth: int = 64) -> None:
        self.control = control
        self.out = out
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._work, name="audiomill-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def wait(self) -> None:
        """Until every job handed over has run."""
        self._jobs.join()

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except BaseException as exc:  # a bug in a sink: the calling thread raises it
                self.control.put(("crash", DiskFull(self.out) if is_disk_full(exc) else exc))
            finally:
                self._jobs.task_done()
        self._jobs.task_done()


class _Consumer:
    """The calling thread's side: windows into the stages, their outputs to the writer."""

    def __init__(self, processor: ShardProcessor, report: Report, writer: _Writer):
        self.outputs = processor.outputs
        self.folder = processor.folder
        self.report = report
        self.writer = writer
        self.finishing = 0  # shards handed to the writer to finish, whose result has not come back
        self.files: dict[int, _File] = {}  # filled by the feeder thread as it hands files out
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
        elif kind == "report":
            self.report(message[1])
        elif kind == "finished":
            self.finishing -= 1
            yield message[1]
        elif kind == "finish_failed":
            self.finishing -= 1
            if message[2] is not None and not message[1].failed:
                yield self._fail(message[1], message[2])
        elif kind == "write_failed":
            if not message[1].failed:
                yield self._fail(message[1], message[2])
        elif kind == "run":
            self.runs.append(message[1])
        elif kind == "fed":
            message[1].fed = True
            self._settle()
        elif kind == "file_error":
            self._failed(message[1], message[2])
        elif kind == "damage":
            self._damage_record(message[1], message[2])
        elif kind == "shard_error":
            yield self._fail(message[1], message[2])

    def written(self) -> Iterator[ShardResult]:
        """Wait for the writer, and take what it says (stopping: its results, its failures)."""
        self.writer.wait()
        while True:
            try:
                message = self.writer.control.get_nowait()
            except queue.Empty:
                break
            if message[0] in ("report", "finished", "finish_failed", "write_failed"):
                yield from self.control(message)
            elif message[0] == "crash":
                raise message[1]
            # the feeder's other messages are dropped, as a stop always did: abandon() frees its shards

    def _fail(self, run: _Run, reason: str) -> ShardResult:
        """The shard cannot go on: what it has written stays resumable, the others go on."""
        run.failed = True
        self.writer.wait()  # nothing is still writing to its sinks
        _close_sinks(run)
        try:
            self.folder.mark_failed(run.shard.name, reason)
        except OSError as exc:
            _stop_if_disk_full(exc, self.folder.out)
            raise
        self._close(run)
        if run in self.runs:
            self.runs.remove(run)
        for ticket in [t for t, file in self.files.items() if file.run is run]:
            del self.files[ticket]
        log.error("shard %s failed: %s", run.shard.name, reason)
        return ShardResult(run.shard.name, "failed", reason=reason)

    def _damage_record(self, run: _Run, record: dict[str, Any]) -> None:
        if run.failed:
            return
        writes = [(sink, None, record) for index, sink in run.sinks.items() if record["key"] not in run.done[index]]
        self.writer.submit(lambda: self._write(run, writes, {"files": 0, "errors": 1, "audio_seconds": 0.0}))

    def _write(self, run: _Run, writes: list[tuple[ShardSink, str | None, Any]], counts: dict[str, Any]) -> None:
        """(In the writer.) Records into their sinks, flushed; then the progress they make."""
        if run.failed:
            return
        try:
            for sink, key, payload in writes:
                if key is None:
                    sink.write_error(payload)
                else:
                    sink.write(key, *payload)
            for sink in {id(sink): sink for sink, _, _ in writes}.values():
                sink.flush()
        except Exception as exc:  # a record the sink cannot write (a disk error): this shard fails, not the run
            _stop_if_disk_full(exc, self.folder.out)
            self.writer.control.put(("write_failed", run, _with_traceback(exc)))
            return
        self.writer.control.put(("report", {"event": "progress", "shard": run.shard.name, **counts}))

    def decoded(self, message: tuple) -> None:
        kind, ticket = message[0], message[1]
        file = self.files.get(ticket)
        if kind == "begin" or file is None:
            return
        if kind == "error":
            self._failed(ticket, message[2])
        elif kind == "done":
            file.decoded = True
            file.run.decoding -= 1
        else:
            _, _, view, window, samples, last, num_samples = message
            for index in list(file.pending):
                output = self.outputs[index]
                if output.view != view:
                    continue
                number = file.windows[index]
                file.windows[index] = number + 1
                self._deliver(index, output.stage.add_window(file.states[index], number, window, samples, last,
                                                             num_samples))
        self._settle()

    def _failed(self, ticket: int, reason: str) -> None:
        """The file did not decode: every stage that needed it records the error."""
        file = self.files[ticket]
        if not file.decoded:
            file.decoded = True
            file.run.decoding -= 1
        for index in list(file.pending):
            self._deliver(index, self.outputs[index].stage.fail(file.states[index], reason))

    def deliver_computed(self) -> None:
        """Write what the stages have already computed (stopping: what waits for a batch stays undone)."""
        for index, output in enumerate(self.outputs):
            self._deliver(index, output.stage.drain())

    def idle(self, end: bool) -> None:
        """Nothing is arriving: run what waits for its batch to fill (``end``: no more input for now)."""
        self._flush(end)
        self._settle()

    def _flush(self, end: bool = False) -> None:
        for index, output in enumerate(self.outputs):
            if end or output.stage.waiting:
                self._deliver(index, output.stage.flush(end))

    def _settle(self) -> None:
        """Flush the batches of shards whose files have all been decoded; finish complete shards."""
        if any(run.fed and not run.decoding and run.finished < run.submitted for run in self.runs):
            self._flush()
        for run in list(self.runs):
            if run.fed and run.finished == run.submitted:
                self._hand_to_finish(run)

    def _deliver(self, index: int, outputs: list[FileOutput]) -> None:
        """Hand the outputs to the writer, and count the files they finish."""
        touched: dict[int, tuple[_Run, dict[str, float], list]] = {}
        for output in outputs:
            file = self.files.get(output.ticket)
            if file is None or index not in file.pending:
                continue
            file.pending.discard(index)
            run = file.run
            if run.failed:
                continue
            _, counts, writes = touched.setdefault(id(run), (run, {"files": 0, "errors": 0, "audio_seconds": 0.0}, []))
            if output.error is not None:
                writes.append((run.sinks[index], None, error_record(output.item, output.error)))
            else:
                writes.append((run.sinks[index], output.item.key,
                               (output.records, round(output.audio_seconds, 6), output.members)))
            if index == next(iter(run.sinks)):  # progress counts the shard's first output
                counts["errors" if output.error is not None else "files"] += 1
                counts["audio_seconds"] += output.audio_seconds
            if not file.pending:
                del self.files[output.ticket]  # its "done" from the decoder, if still to come, finds nothing
                if not file.decoded:
                    file.decoded = True
                    run.decoding -= 1
                run.finished += 1
        for run, counts, writes in touched.values():
            self.writer.submit(lambda run=run, writes=writes, counts=counts: self._write(run, writes, counts))

    def _hand_to_finish(self, run: _Run) -> None:
        """Every file of the shard is handed over: the writer finishes it after its records."""
        self.runs.remove(run)
        run.finishing = True
        self.finishing += 1

        def finish() -> None:
            outcome = None if run.failed else self._finish(run)
            if isinstance(outcome, ShardResult):
                self.writer.control.put(("finished", outcome))
            else:
                self.writer.control.put(("finish_failed", run, outcome))

        self.writer.submit(finish)

    def _finish(self, run: _Run) -> ShardResult | str:
        """(In the writer.) Each sink's final file, then its done marker: the result, or why the
        shard failed."""
        per_group: dict[str, dict[str, Any]] = {}
        untrusted: dict[str, dict[str, Any]] = {}
        if run.untrusted is not None:
            first, reason = run.untrusted
            for key, audio_file in run.files[first:]:
                untrusted[key] = {"key": key, "tar_file": run.shard.path, "audio_file": audio_file,
                                  "error": f"not kept: read from a part of the archive that failed its check ({reason})"}
        for index, sink in run.sinks.items():
            group = self.outputs[index].group
            try:
                stats: dict[str, Any] = sink.finish(run.order, untrusted)
            except Exception as exc:  # the final file cannot be written: this shard fails, not the run
                _stop_if_disk_full(exc, self.folder.out)
                return _with_traceback(exc)
            stats.update(shard=run.shard.name, source=run.shard.path, wall_seconds=round(time.time() - run.started, 3),
                         finished=time.time(), host=os.uname().nodename)
            if run.damage:  # not complete: the marker keeps what was found, and which file it was found in
                stats.update(damaged=run.damage, source_file=source_identity(run.shard.path))
            try:
                self.folder.mark_done(run.shard.name, stats, group)
            except OSError as exc:
                _stop_if_disk_full(exc, self.folder.out)
                raise
            sink.cleanup()
            per_group[group] = stats
            log.info("shard %s%s complete: %d files, %d errors, %.1f s audio in %.1f s", run.shard.name,
                     f" ({group})" if group else "", stats["items"], stats["errors"], stats["audio_seconds"],
                     stats["wall_seconds"])
        self._close(run)
        if run.damage:
            return ShardResult(run.shard.name, "damaged", merge_stats(per_group), "; ".join(run.damage))
        return ShardResult(run.shard.name, "done", merge_stats(per_group))

    def abandon(self) -> None:
        """The run is ending (call with :attr:`guard` held): keep what is written, it is resumable,
        and free every lock still held."""
        for run in self.opened:
            _release(run)
        self.opened.clear()
        self.runs.clear()
