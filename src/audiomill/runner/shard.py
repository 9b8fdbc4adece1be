"""One shard, start to finish: source -> decode pool -> stage -> sink, resumable per file."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from audiomill.audio import Audio, decode
from audiomill.errors import DecodeError, ShardError
from audiomill.items import Item, Shard
from audiomill.runner.state import OutputFolder
from audiomill.sinks.jsonl import JsonlSink
from audiomill.sources import read_shard
from audiomill.stages.tokenize import TokenizeStage

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]


@dataclass
class ShardResult:
    name: str
    status: str  # "done" (this run finished it), "complete" (already was), "held", "failed"
    stats: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def decode_one(item: Item, sample_rate: int) -> Audio | str:
    try:
        source = item.data if item.data is not None else item.path
        return decode(source, sample_rate, item.offset, item.duration)
    except DecodeError as exc:
        return str(exc)
    except Exception as exc:  # a decoder bug must not end the shard
        return f"decoding failed: {type(exc).__name__}: {exc}"


def decode_stream(
    items: Iterator[Item], sample_rate: int, pool: ThreadPoolExecutor, prefetch: int
) -> Iterator[tuple[Item, Audio | str]]:
    """Decode items in the pool, at most ``prefetch`` ahead, yielding in shard order."""
    queue: deque[tuple[Item, Future | str]] = deque()
    for item in items:
        if item.skipped:
            continue
        if item.error is not None:
            queue.append((item, item.error))
        else:
            queue.append((item, pool.submit(decode_one, item, sample_rate)))
        while len(queue) > prefetch:
            yield _resolve(queue.popleft())
    while queue:
        yield _resolve(queue.popleft())


def _resolve(entry: tuple[Item, Future | str]) -> tuple[Item, Audio | str]:
    item, pending = entry
    result = pending if isinstance(pending, str) else pending.result()
    item.data = None  # the bytes are no longer needed
    return item, result


def error_record(item: Item, reason: str) -> dict[str, Any]:
    return {"key": item.key, "tar_file": item.source, "audio_file": item.audio_file, "error": reason}


class ShardProcessor:
    """Runs shards through one stage, in one process; owns the decode pool."""

    def __init__(self, folder: OutputFolder, stage: TokenizeStage, decode_workers: int, holder: str = "") -> None:
        self.folder = folder
        self.stage = stage
        self.decode_workers = max(1, decode_workers)
        self.pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode")
        self.holder = holder

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, shard: Shard, retry_errors: bool, report: Report) -> ShardResult:
        lock = self.folder.try_lock(shard.name, self.holder)
        if lock is None:
            return ShardResult(shard.name, "held", reason="another process holds it")
        try:
            stats = self.folder.done_stats(shard.name)
            if stats is not None and not (retry_errors and stats.get("errors", 0) > 0):
                return ShardResult(shard.name, "complete", stats)
            if stats is not None:
                self.folder.unmark_done(shard.name)
            return self._process(shard, retry_errors, report)
        finally:
            lock.release()

    def _process(self, shard: Shard, retry_errors: bool, report: Report) -> ShardResult:
        started = time.time()
        sink = JsonlSink(self.folder.out, shard.name)
        done = sink.open(retry_errors)
        if done:
            log.info("%s: resuming, %d files already written", shard.name, len(done))
        order: list[str] = []

        def items() -> Iterator[Item]:
            for item in read_shard(shard, want=lambda key: key not in done):
                order.append(item.key)
                yield item

        decoded = decode_stream(items(), self.stage.codec.sample_rate, self.pool, prefetch=4 * self.decode_workers)
        try:
            for outputs in self.stage.run(decoded):
                files = errors = 0
                seconds = 0.0
                for output in outputs:
                    if output.record is not None:
                        sink.write(output.record)
                        files += 1
                        seconds += output.audio_seconds
                    else:
                        sink.write_error(error_record(output.item, output.error or "unknown error"))
                        errors += 1
                sink.flush()
                report({"event": "progress", "shard": shard.name, "files": files, "errors": errors,
                        "audio_seconds": seconds})
        except ShardError as exc:
            sink.close()
            self.folder.mark_failed(shard.name, str(exc))
            log.error("%s: %s", shard.name, exc)
            return ShardResult(shard.name, "failed", reason=str(exc))
        except BaseException:
            sink.close()
            raise
        stats: dict[str, Any] = sink.finish(order)
        stats.update(shard=shard.name, source=shard.path, wall_seconds=round(time.time() - started, 3),
                     finished=time.time(), host=os.uname().nodename)
        self.folder.mark_done(shard.name, stats)
        log.info("shard %s complete: %d files, %d errors, %.1f s audio in %.1f s", shard.name, stats["items"],
                 stats["errors"], stats["audio_seconds"], stats["wall_seconds"])
        return ShardResult(shard.name, "done", stats)
