"""JSON Lines, one file per shard, plus ``<shard>.errors.jsonl`` for files that failed.

While a shard is in progress its records are appended to ``<shard>.jsonl.partial``
and flushed after every batch. Opening the sink again reads the keys already
there (a torn last line, from a kill mid-write, is cut off) so that the caller can
skip them. Finishing sorts the records into the shard's own order, writes them to
a temporary file and renames it over ``<shard>.jsonl``; the partial goes last.
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO


def dumps(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def scan_lines(path: str) -> tuple[list[tuple[str, int, int]], float]:
    """(key, offset, length) of every complete, parsable line, and the audio seconds they hold."""
    entries: list[tuple[str, int, int]] = []
    seconds = 0.0
    offset = 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn by a kill mid-write
            try:
                record = json.loads(line)
                key = str(record["key"])
            except (ValueError, KeyError, TypeError):
                offset += len(line)
                continue
            entries.append((key, offset, len(line)))
            if isinstance(record.get("num_samples"), int) and record.get("sample_rate"):
                seconds += record["num_samples"] / record["sample_rate"]
            offset += len(line)
    return entries, seconds


class _Stream:
    """One append-only partial file and the final file it becomes."""

    def __init__(self, final: str) -> None:
        self.final = final
        self.partial = final + ".partial"
        self.handle: BinaryIO | None = None
        self.keys: set[str] = set()
        self.count = 0

    def open(self, keep: bool) -> None:
        if not keep:
            for path in (self.partial, self.final):
                if os.path.exists(path):
                    os.unlink(path)
        elif not os.path.exists(self.partial) and os.path.exists(self.final):
            os.replace(self.final, self.partial)  # finished but not marked done: take it up again
        if os.path.exists(self.partial):
            entries, _ = scan_lines(self.partial)
            if sum(length for _, _, length in entries) != os.path.getsize(self.partial):
                self._rewrite(entries)
            self.keys = {key for key, _, _ in entries}
            self.count = len(entries)
        self.handle = open(self.partial, "ab")

    def write(self, line: bytes, key: str) -> None:
        assert self.handle is not None
        self.handle.write(line)
        self.keys.add(key)
        self.count += 1

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def finish(self, order: dict[str, int], keep_empty: bool) -> float:
        """Sort the partial into ``order`` and rename it into place; returns its audio seconds."""
        self.close()
        if not os.path.exists(self.partial):
            return 0.0
        entries, seconds = scan_lines(self.partial)
        self.count = len(entries)
        if not entries and not keep_empty:
            os.unlink(self.partial)
            if os.path.exists(self.final):
                os.unlink(self.final)
            return 0.0
        last = len(order)
        ranked = sorted(enumerate(entries), key=lambda e: (order.get(e[1][0], last), e[0]))
        tmp = self.final + ".tmp"
        with open(self.partial, "rb") as src, open(tmp, "wb") as dst:
            for _, (_, offset, length) in ranked:
                src.seek(offset)
                dst.write(src.read(length))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.final)
        os.unlink(self.partial)
        return seconds

    def _rewrite(self, entries: list[tuple[str, int, int]]) -> None:
        """Keep only whole, parsable lines (drops a torn tail left by a kill)."""
        tmp = self.partial + ".tmp"
        with open(self.partial, "rb") as src, open(tmp, "wb") as dst:
            for _, offset, length in entries:
                src.seek(offset)
                dst.write(src.read(length))
        os.replace(tmp, self.partial)


class JsonlSink:
    extension = "jsonl"

    def __init__(self, out_dir: str, shard_name: str) -> None:
        self.path = os.path.join(out_dir, f"{shard_name}.jsonl")
        self.records = _Stream(self.path)
        self.errors = _Stream(os.path.join(out_dir, f"{shard_name}.errors.jsonl"))

    def open(self, retry_errors: bool = False) -> set[str]:
        """Prepare to append; returns the keys already written (errors too, unless retried)."""
        self.records.open(keep=True)
        self.errors.open(keep=not retry_errors)
        return self.records.keys | self.errors.keys

    def write(self, record: dict[str, Any]) -> None:
        self.records.write(dumps(record), record["key"])

    def write_error(self, record: dict[str, Any]) -> None:
        self.errors.write(dumps(record), record["key"])

    def flush(self) -> None:
        self.records.flush()
        self.errors.flush()

    def close(self) -> None:
        self.records.close()
        self.errors.close()

    def finish(self, order: list[str]) -> dict[str, float]:
        """Sort into ``order`` (the shard's item keys), rename into place; returns the shard's counts."""
        rank = {key: i for i, key in enumerate(order)}
        seconds = self.records.finish(rank, keep_empty=True)
        self.errors.finish(rank, keep_empty=False)
        return {"items": self.records.count, "errors": self.errors.count, "audio_seconds": round(seconds, 3)}
