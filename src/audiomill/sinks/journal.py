"""The journal of a shard in progress, and the shard's final files made from it.

Records are appended to ``<shard>.<ext>.partial``, one JSON line per *file*:
``{"key": K, "records": [...], "seconds": S}`` (a file may give zero, one or several
records; ``S`` is the audio it held, counted as it passed). Errors go to
``<shard>.errors.jsonl.partial``, one error record a line. Both are flushed after every
batch. Opening the sink again reads the keys already journaled (a line torn by a kill
is cut off) so that the caller skips them.

:meth:`ShardSink.finish` sorts the journal into the shard's order and has the format
write the final file under a temporary name, renamed into place; the errors likewise.
The journals are removed by :meth:`ShardSink.cleanup`, after the caller has written its
done marker: a kill anywhere in between leaves a shard that finishes again identically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from audiomill.sinks import Format, SchemaStore, errors_name, final_name, journal_name


def dumps(record: dict[str, Any]) -> bytes:
    """A record as one JSON line: compact, UTF-8, keys in the order the stage wrote them.

    A name that is not UTF-8 (a byte 0xNN that does not decode reaches Python as the lone
    surrogate U+DCNN) cannot be written as UTF-8 text: such a record is written with JSON's
    ``\\uXXXX`` escapes instead (``"bad\\udcff.wav"``), which ``json.loads`` reads back to the
    same string, and ``os.fsencode`` to the original bytes."""
    try:
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def file_digest(path: str) -> dict[str, Any]:
    """What a done marker keeps of a final file, to notice later that it went missing or changed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def scan_lines(path: str) -> list[tuple[str, int, int]]:
    """(key, offset, length) of every whole, parsable line; a torn or foreign line is left out."""
    entries: list[tuple[str, int, int]] = []
    offset = 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn by a kill mid-write
            try:
                key = json.loads(line)["key"]
            except (ValueError, KeyError, TypeError):
                offset += len(line)
                continue
            if isinstance(key, str):
                entries.append((key, offset, len(line)))
            offset += len(line)
    return entries


class _Journal:
    """One append-only file of JSON lines, each with a ``key``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle: BinaryIO | None = None
        self.keys: set[str] = set()

    def open(self, keep: bool) -> None:
        if not keep and os.path.exists(self.path):
            os.unlink(self.path)
        if os.path.exists(self.path):
            entries = scan_lines(self.path)
            if sum(length for _, _, length in entries) != os.path.getsize(self.path):
                self._rewrite(entries)
            self.keys = {key for key, _, _ in entries}
        self.handle = open(self.path, "ab")

    def write(self, line: bytes, key: str) -> None:
        assert self.handle is not None
        self.handle.write(line)
        self.keys.add(key)

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def sorted_lines(self, order: dict[str, int]) -> Iterator[bytes]:
        """The journal's lines in ``order`` (unknown keys last, in journal order)."""
        if not os.path.exists(self.path):
            return
        entries = scan_lines(self.path)
        last = len(order)
        ranked = sorted(range(len(entries)), key=lambda i: (order.get(entries[i][0], last), i))
        with open(self.path, "rb") as src:
            for i in ranked:
                _, offset, length = entries[i]
                src.seek(offset)
                yield src.read(length)

    def _rewrite(self, entries: list[tuple[str, int, int]]) -> None:
        """Keep only whole, parsable lines (drops a torn tail left by a kill)."""
        tmp = self.path + ".tmp"
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            for _, offset, length in entries:
                src.seek(offset)
                dst.write(src.read(length))
        os.replace(tmp, self.path)


class ShardSink:
    """The output of one stage for one shard, in ``folder``, in format ``fmt``."""

    def __init__(self, folder: str, shard: str, fmt: Format, fields: dict[str, str], schema: SchemaStore) -> None:
        self.fmt = fmt
        self.fields = fields
        self.schema = schema
        self.path = os.path.join(folder, final_name(shard, fmt))
        self.errors_path = os.path.join(folder, errors_name(shard))
        self.journal = _Journal(os.path.join(folder, journal_name(shard, fmt)))
        self.errors = _Journal(self.errors_path + ".partial")

    def open(self, retry_errors: bool = False, previous: dict[str, Any] | None = None) -> set[str]:
        """Prepare to append; returns the keys already written (errors too, unless retried).

        ``previous`` is the done marker of a complete shard being taken up again (to retry its
        errors): its final file becomes the journal again."""
        if previous is not None and not os.path.exists(self.journal.path) and os.path.exists(self.path):
            self._journal_from_final(float(previous.get("audio_seconds", 0.0)))
        if previous is not None and not os.path.exists(self.errors.path) and os.path.exists(self.errors_path):
            os.replace(self.errors_path, self.errors.path)
        self.journal.open(keep=True)
        self.errors.open(keep=not retry_errors)
        return self.journal.keys | self.errors.keys

    def write(self, key: str, records: list[dict[str, Any]], seconds: float) -> None:
        self.journal.write(dumps({"key": key, "records": records, "seconds": seconds}), key)

    def write_error(self, record: dict[str, Any]) -> None:
        self.errors.write(dumps(record), record["key"])

    def flush(self) -> None:
        self.journal.flush()
        self.errors.flush()

    def close(self) -> None:
        self.journal.close()
        self.errors.close()

    def finish(self, order: list[str], untrusted: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Write the final files in ``order`` (the shard's keys); returns the shard's counts.

        ``untrusted``: keys whose records are not kept (read from damaged data), each with the
        error record that takes their place. The journals stay until :meth:`cleanup`: the caller
        marks the shard done in between."""
        self.close()
        untrusted = untrusted or {}
        rank = {key: i for i, key in enumerate(order)}
        counts = {"items": 0, "records": 0, "errors": 0, "audio_seconds": 0.0}
        replaced: list[str] = []

        def records() -> Iterator[dict[str, Any]]:
            for line in self.journal.sorted_lines(rank):
                entry = json.loads(line)
                if entry["key"] in untrusted:
                    replaced.append(entry["key"])
                    continue
                counts["items"] += 1
                counts["records"] += len(entry["records"])
                counts["audio_seconds"] += float(entry.get("seconds") or 0.0)
                yield from entry["records"]

        _replace(self.path, lambda tmp: self.fmt.write(tmp, records(), self.fields, self.schema))
        error_lines = list(self.errors.sorted_lines(rank))
        if replaced:
            error_lines += [dumps(untrusted[key]) for key in replaced]
            error_lines.sort(key=lambda line: rank.get(json.loads(line)["key"], len(rank)))
        counts["errors"] = len(error_lines)
        if error_lines:
            _replace(self.errors_path, lambda tmp: _write_lines(tmp, error_lines))
        elif os.path.exists(self.errors_path):
            os.unlink(self.errors_path)
        counts["audio_seconds"] = round(counts["audio_seconds"], 3)
        counts["output"] = file_digest(self.path)
        return counts

    def discard(self) -> None:
        """Remove the shard's files, to write it again from nothing."""
        for path in (self.path, self.errors_path, self.journal.path, self.errors.path):
            if os.path.exists(path):
                os.unlink(path)

    def cleanup(self) -> None:
        for path in (self.journal.path, self.errors.path):
            if os.path.exists(path):
                os.unlink(path)

    def _journal_from_final(self, seconds: float) -> None:
        """Rebuild the journal of a finished shard from its final file, a line per file key (the
        shard's audio seconds go with its first line)."""
        tmp = self.journal.path + ".tmp"
        with open(tmp, "wb") as out:
            group: list[dict[str, Any]] = []
            for record in list(self.fmt.read(self.path)) + [None]:  # type: ignore[list-item]
                if group and (record is None or record["key"] != group[0]["key"]):
                    out.write(dumps({"key": group[0]["key"], "records": group, "seconds": seconds}))
                    seconds, group = 0.0, []
                if record is not None:
                    group.append(record)
        os.replace(tmp, self.journal.path)


def _write_lines(path: str, lines: list[bytes]) -> None:
    with open(path, "wb") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())


def _replace(path: str, write) -> None:
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)
