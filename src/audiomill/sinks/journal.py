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

A stage may also give files to go with its records (``FileOutput.members``: a segment's
FLAC and JSON). Its sink then keeps them in a third journal, ``<members>/<shard>.tar.partial``
(per file key, a JSON header line naming the members and their sizes, then their bytes),
written and flushed before the file's record line, so a record journaled always has its
members. Finishing writes ``<members>/<shard>.tar`` from it, in the shard's order, in
WebDataset's layout: a record ``spk/utt-0003`` gives ``spk/utt-0003.flac`` and
``spk/utt-0003.json`` (:func:`sample_name`), each member with mtime 0 and owner 0, so the
tar is the same bytes however often the run was killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
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

    def drop(self, keys: set[str]) -> None:
        """Leave out the lines of ``keys`` (while closed for writing)."""
        self.close()
        entries = [entry for entry in scan_lines(self.path) if entry[0] not in keys]
        self._rewrite(entries)
        self.keys -= keys
        self.handle = open(self.path, "ab")

    def _rewrite(self, entries: list[tuple[str, int, int]]) -> None:
        """Keep only whole, parsable lines (drops a torn tail left by a kill)."""
        tmp = self.path + ".tmp"
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            for _, offset, length in entries:
                src.seek(offset)
                dst.write(src.read(length))
        os.replace(tmp, self.path)


def sample_name(key: str) -> str:
    """A record key as a WebDataset sample key: no dot in its last part (a reader takes what follows
    the first dot there for the extension), no empty, ``.`` or ``..`` part, never absolute."""
    parts = [part.replace(".", "_") or "_" for part in key.strip("/").split("/")]
    return "/".join(parts) or "_"


class _MemberJournal:
    """A shard's member files as they come: per file key, ``{"key": K, "members": [[name, size], ...]}``
    and a newline, then the members' bytes. The last entry of a key is the one kept."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle: BinaryIO | None = None
        self.entries: dict[str, list[tuple[str, int, int]]] = {}  # key -> (name, offset, size) of each member

    @property
    def keys(self) -> set[str]:
        return set(self.entries)

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.entries = {}
        end = 0
        if os.path.exists(self.path):
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as handle:
                while True:
                    line = handle.readline()
                    if not line.endswith(b"\n"):
                        break  # the end, or a header torn by a kill
                    try:
                        header = json.loads(line)
                        key, members = header["key"], [(str(n), int(b)) for n, b in header["members"]]
                    except (ValueError, KeyError, TypeError):
                        break
                    at = end + len(line)
                    if at + sum(b for _, b in members) > size:
                        break  # its bytes were torn off
                    placed = []
                    for name, length in members:
                        placed.append((name, at, length))
                        at += length
                    self.entries[key] = placed
                    end = at
                    handle.seek(end)
            if end != size:
                os.truncate(self.path, end)
        self.handle = open(self.path, "ab")

    def write(self, key: str, members: list[tuple[str, bytes]]) -> None:
        """One file's members, flushed at once (before its record line is written)."""
        assert self.handle is not None
        self.entries[key] = _write_entry(self.handle, key, members)
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def write_tar(self, path: str, keys: list[str]) -> int:
        """The members of ``keys``, in that order, as a tar of fixed metadata; returns how many."""
        count = 0
        with open(self.path, "rb") as src, open(path, "wb") as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for key in keys:
                    for name, offset, size in self.entries.get(key, ()):
                        info = tarfile.TarInfo(name)
                        info.size, info.mtime, info.mode = size, 0, 0o644
                        src.seek(offset)
                        tar.addfile(info, src)
                        count += 1
            out.flush()
            os.fsync(out.fileno())
        return count

    def from_tar(self, tar_path: str, file_keys: dict[str, str]) -> None:
        """Rebuild the journal of a finished shard from its tar; ``file_keys``: sample -> file key."""
        grouped: dict[str, list[tuple[str, bytes]]] = {}
        with tarfile.open(tar_path) as tar:
            for info in tar:
                folder, _, base = info.name.rpartition("/")
                sample = (folder + "/" if folder else "") + base.split(".", 1)[0]
                key = file_keys.get(sample)
                handle = tar.extractfile(info)
                if key is not None and handle is not None:
                    grouped.setdefault(key, []).append((info.name, handle.read()))
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".tmp", "wb") as out:
            for key, members in grouped.items():
                _write_entry(out, key, members)
        os.replace(self.path + ".tmp", self.path)


def _write_entry(handle: BinaryIO, key: str, members: list[tuple[str, bytes]]) -> list[tuple[str, int, int]]:
    """A member journal's entry for one file; returns (name, offset, size) of each member."""
    header = dumps({"key": key, "members": [[name, len(data)] for name, data in members]})
    at = handle.tell() + len(header)
    handle.write(header)
    placed = []
    for name, data in members:
        handle.write(data)
        placed.append((name, at, len(data)))
        at += len(data)
    return placed


class ShardSink:
    """The output of one stage for one shard, in ``folder``, in format ``fmt``; with ``members`` (a
    folder name), its files too, in ``<folder>/<members>/<shard>.tar``. ``file_key``: the record field
    that holds its file's key (``key``, unless a stage writes several records per file under keys
    of their own)."""

    def __init__(self, folder: str, shard: str, fmt: Format, fields: dict[str, str], schema: SchemaStore,
                 members: str | None = None, file_key: str = "key") -> None:
        self.fmt = fmt
        self.fields = fields
        self.schema = schema
        self.file_key = file_key
        self.path = os.path.join(folder, final_name(shard, fmt))
        self.errors_path = os.path.join(folder, errors_name(shard))
        self.journal = _Journal(os.path.join(folder, journal_name(shard, fmt)))
        self.errors = _Journal(self.errors_path + ".partial")
        self.members_name = f"{members}/{shard}.tar" if members else ""  # its path in the marker
        self.members_path = os.path.join(folder, members, f"{shard}.tar") if members else ""
        self.members = _MemberJournal(self.members_path + ".partial") if members else None

    def open(self, retry_errors: bool = False, previous: dict[str, Any] | None = None) -> set[str]:
        """Prepare to append; returns the keys already written (errors too, unless retried).

        ``previous`` is the done marker of a complete shard being taken up again (to retry its
        errors): its final file becomes the journal again."""
        if previous is not None and not os.path.exists(self.journal.path) and os.path.exists(self.path):
            self._journal_from_final(float(previous.get("audio_seconds", 0.0)))
        if previous is not None and not os.path.exists(self.errors.path) and os.path.exists(self.errors_path):
            os.replace(self.errors_path, self.errors.path)
        if self.members is not None and previous is not None and not os.path.exists(self.members.path) \
                and os.path.exists(self.members_path):
            self._members_from_final()
        self.journal.open(keep=True)
        self.errors.open(keep=not retry_errors)
        if self.members is not None:
            self.members.open()
            lacking = self.journal.keys - self.members.keys
            if lacking:  # (only if the system lost what was flushed) their files are written again
                self.journal.drop(lacking)
        return self.journal.keys | self.errors.keys

    def write(self, key: str, records: list[dict[str, Any]], seconds: float,
              members: list[tuple[str, str, bytes]] | None = None) -> None:
        """A file's records; ``members``: its files, each (record key, extension, bytes)."""
        if self.members is not None:
            self.members.write(key, [(f"{sample_name(record)}.{ext}", data) for record, ext, data in members or ()])
        self.journal.write(dumps({"key": key, "records": records, "seconds": seconds}), key)

    def write_error(self, record: dict[str, Any]) -> None:
        self.errors.write(dumps(record), record["key"])

    def flush(self) -> None:
        self.journal.flush()
        self.errors.flush()

    def close(self) -> None:
        self.journal.close()
        self.errors.close()
        if self.members is not None:
            self.members.close()

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
        kept: list[str] = []

        def records() -> Iterator[dict[str, Any]]:
            for line in self.journal.sorted_lines(rank):
                entry = json.loads(line)
                if entry["key"] in untrusted:
                    replaced.append(entry["key"])
                    continue
                kept.append(entry["key"])
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
        if self.file_key != "key":  # (status --check finds each record's file by it)
            counts["file_key"] = self.file_key
        if self.members is not None:
            members = self.members
            count = _replace(self.members_path, lambda tmp: members.write_tar(tmp, kept))
            counts["members"] = {"file": self.members_name, "count": count, **file_digest(self.members_path)}
        return counts

    def _journals(self) -> list[str]:
        return [self.journal.path, self.errors.path] + ([self.members.path] if self.members is not None else [])

    def discard(self) -> None:
        """Remove the shard's files, to write it again from nothing."""
        for path in [self.path, self.errors_path, self.members_path] + self._journals():
            if path and os.path.exists(path):
                os.unlink(path)

    def cleanup(self) -> None:
        for path in self._journals():
            if os.path.exists(path):
                os.unlink(path)

    def _journal_from_final(self, seconds: float) -> None:
        """Rebuild the journal of a finished shard from its final file, a line per file key (the
        shard's audio seconds go with its first line)."""
        tmp = self.journal.path + ".tmp"
        with open(tmp, "wb") as out:
            group: list[dict[str, Any]] = []
            for record in list(self.fmt.read(self.path, self.fields)) + [None]:  # type: ignore[list-item]
                if group and (record is None or record[self.file_key] != group[0][self.file_key]):
                    out.write(dumps({"key": group[0][self.file_key], "records": group, "seconds": seconds}))
                    seconds, group = 0.0, []
                if record is not None:
                    group.append(record)
        os.replace(tmp, self.journal.path)

    def _members_from_final(self) -> None:
        """The members journal of a finished shard, from its tar (sample names mapped to file keys
        through the final file's records)."""
        assert self.members is not None
        file_keys = {sample_name(r["key"]): r[self.file_key] for r in self.fmt.read(self.path, {})} \
            if os.path.exists(self.path) else {}
        self.members.from_tar(self.members_path, file_keys)


def _write_lines(path: str, lines: list[bytes]) -> None:
    with open(path, "wb") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())


def _replace(path: str, write) -> Any:
    """``write(tmp)``, then ``tmp`` renamed to ``path``; returns what ``write`` returned."""
    tmp = path + ".tmp"
    result = write(tmp)
    os.replace(tmp, path)
    return result
