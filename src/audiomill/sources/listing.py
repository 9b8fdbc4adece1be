"""Folders and manifests listed once, when the plan is made, and the listing kept with the plan.

A folder's listing is its audio files' relative paths, sorted, one JSON string a line (any
name survives: newlines, bytes that are not UTF-8); a manifest's is a copy of the
manifest. Shards are slices of ``files_per_shard`` entries, and each shard records the
byte offset of its first entry, so reading a shard seeks straight to it: nothing is walked
or scanned again per shard, and files added to the folder later do not shift any shard.

Listing a folder holds at most ``CHUNK`` names in memory at once: the walk spills sorted
chunks to disk and merges them, so a folder of millions of files plans in flat memory.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import shutil
from collections.abc import Iterator

from audiomill.errors import UsageError
from audiomill.items import Shard
from audiomill.sources.reader import is_audio_name

CHUNK = 1 << 16  # names sorted in memory at once while listing a folder

log = logging.getLogger(__name__)


def walk_audio_files(root: str, extensions: tuple[str, ...] | None = None) -> Iterator[str]:
    """Audio files under ``root`` (by ``extensions``, see :func:`~audiomill.sources.reader.is_audio_name`) as
    ``/``-separated relative paths, in walk order (hidden ones left out)."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        for name in files:
            if is_audio_name(name, extensions) and not name.startswith("."):
                yield name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")


def list_folder(root: str, path: str, extensions: tuple[str, ...] | None = None) -> int:
    """Write the sorted listing of the audio files under ``root`` to ``path``; returns how many."""
    parts: list[str] = []
    chunk: list[str] = []
    count = 0

    def spill() -> None:
        chunk.sort()
        part = f"{path}.part{len(parts)}"
        with open(part, "w", encoding="utf-8") as handle:
            handle.writelines(_entry(name) for name in chunk)
        parts.append(part)
        chunk.clear()

    try:
        for name in walk_audio_files(root, extensions):
            chunk.append(name)
            count += 1
            if len(chunk) >= CHUNK:
                spill()
        chunk.sort()
        handles = [open(part, encoding="utf-8") for part in parts]
        try:
            streams = [(json.loads(line) for line in handle) for handle in handles]
            with open(path + ".tmp", "w", encoding="utf-8") as out:
                out.writelines(_entry(name) for name in heapq.merge(chunk, *streams))
        finally:
            for handle in handles:
                handle.close()
        os.replace(path + ".tmp", path)
    finally:
        for part in parts:
            os.unlink(part)
    return count


def report_changes(root: str, path: str, extensions: tuple[str, ...] | None = None) -> None:
    """Say so when the folder ``root`` no longer holds the files of its listing ``path``. The shards
    stay those of the listing (so that none shifts): files added since are not in the run, and
    files gone become error records."""
    with open(path, "rb") as handle:
        listed = sum(1 for _ in handle)
    found = _digest(walk_audio_files(root, extensions))
    if found == _digest(read_entries(path, 0, listed)):
        return
    names = set(read_entries(path, 0, listed))
    added = [name for name in walk_audio_files(root, extensions) if name not in names]
    if added:
        log.warning("%d audio file(s) were added to %s after its plan was made (such as %s): the plan's shards "
                    "stay as they were, so they are not in this run; tokenize them into another --out",
                    len(added), root, ", ".join(sorted(added)[:3]))
    gone = len(names) - (found[0] - len(added))
    if gone > 0:
        log.warning("%d audio file(s) of the plan are gone from %s: they become error records", gone, root)


def _digest(names: Iterator[str]) -> tuple[int, int]:
    """How many names, and a sum of their hashes: equal for the same names in any order, in flat memory."""
    count = total = 0
    for name in names:
        count += 1
        digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        total = (total + int.from_bytes(digest, "big")) % (1 << 64)
    return count, total


def copy_manifest(manifest: str, path: str) -> None:
    try:
        shutil.copyfile(manifest, path + ".tmp")
    except OSError as exc:
        raise UsageError(f"cannot read manifest {manifest}: {exc.strerror or exc}") from None
    os.replace(path + ".tmp", path)


def _entry(name: str) -> str:
    return json.dumps(name) + "\n"


def read_entries(path: str, offset: int, count: int) -> Iterator[str]:
    """``count`` names of a folder listing, from the byte ``offset``."""
    with open(path, encoding="utf-8") as handle:
        handle.seek(offset)
        for _ in range(count):
            line = handle.readline()
            if not line:
                return
            yield json.loads(line)


def slices(listing: str, stem: str, kind: str, source: str, per_shard: int) -> list[Shard]:
    """The shards of a listing (``kind`` "dir": one entry a line; "manifest": its non-blank lines)."""
    starts: list[tuple[int, int, int]] = []  # per shard: first entry, its byte offset, its line number
    index = offset = 0
    with open(listing, "rb") as handle:
        for number, line in enumerate(handle):
            if kind == "manifest" and not line.decode("utf-8", "replace").strip():
                offset += len(line)
                continue
            if index % per_shard == 0:
                starts.append((index, offset, number))
            index += 1
            offset += len(line)
    return [Shard(name=f"{stem}-{first // per_shard:05d}", kind=kind, path=source, start=first,
                  count=min(per_shard, index - first), listing=listing, offset=at, line=number)
            for first, at, number in starts]
