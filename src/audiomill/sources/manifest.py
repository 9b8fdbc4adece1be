"""JSONL manifests: one audio file a line; a shard is a slice of the lines.

The audio path is read from ``audio_filepath`` (NeMo), ``audio`` or ``path``;
relative paths are resolved against the manifest's folder. The key is the line's
``key`` or ``id`` field, else the audio path as written (with ``@offset`` when the
line has an ``offset``). Every other field becomes metadata; ``offset`` and
``duration`` (seconds) select a segment of the file. A member of a tar archive is named
``ARCHIVE#MEMBER`` (as ``audiomill vad`` writes it): read in place from an uncompressed
archive, extracted from a compressed one.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator

from audiomill.errors import ShardError
from audiomill.items import Item, Shard
from audiomill.sources.reader import Want, register

PATH_FIELDS = ("audio_filepath", "audio", "path")
KEY_FIELDS = ("key", "id")


@register("manifest")
def read_manifest(shard: Shard, want: Want) -> Iterator[Item]:
    folder = os.path.dirname(os.path.abspath(shard.path))
    end = None if shard.count is None else shard.start + shard.count
    planned = shard.listing is not None  # the manifest as it was when planned, read from the shard's first line
    try:
        handle = open(shard.listing if planned else shard.path, encoding="utf-8")
    except OSError as exc:
        raise ShardError(f"cannot read manifest {shard.path}: {exc}") from exc
    archives = _Archives()
    with handle, archives:
        if planned:
            handle.seek(shard.offset)
        index = shard.start - 1 if planned else -1
        for number, line in enumerate(iter(handle.readline, ""), shard.line if planned else 0):
            if not line.strip():
                continue
            index += 1
            if index < shard.start:
                continue
            if end is not None and index >= end:
                break
            yield _line_item(shard, folder, number, index - shard.start, line, want, archives)


class _Archives:
    """The tar archives a manifest names members of, each opened once while its shard is read."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[tarfile.TarFile, dict[str, tarfile.TarInfo], bool]] = {}

    def __enter__(self) -> "_Archives":
        return self

    def __exit__(self, *exc) -> None:
        for archive, _, _ in self._open.values():
            archive.close()

    def member(self, path: str) -> tuple[str, str] | None:
        """``(archive, member)`` if ``path`` is ``ARCHIVE#MEMBER`` with ARCHIVE a file here."""
        at = path.find("#")
        while at != -1:
            if os.path.isfile(path[:at]):
                return path[:at], path[at + 1:]
            at = path.find("#", at + 1)
        return None

    def fill(self, item: Item, archive: str, member: str) -> None:
        if archive not in self._open:
            try:
                handle = tarfile.open(archive)
            except (OSError, tarfile.TarError) as exc:
                item.error = f"cannot read the archive {archive}: {exc}"
                return
            members = {info.name: info for info in handle.getmembers() if info.isfile()}
            self._open[archive] = (handle, members, not _uncompressed(archive))
        handle, members, compressed = self._open[archive]
        info = members.get(member)
        if info is None:
            item.error = f"{archive} has no member {member}"
        elif compressed:
            item.data = handle.extractfile(info).read()
        else:
            item.source, item.member_range = archive, (info.offset_data, info.size)


def _uncompressed(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(6)
    return not head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def _line_item(shard: Shard, folder: str, number: int, index: int, line: str, want: Want,
               archives: _Archives | None = None) -> Item:
    try:
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        key = f"line{number + 1}"
        return Item(key=key, source=shard.path, audio_file="", index=index,
                    error=f"line {number + 1} of the manifest is not valid JSON: {exc}", skipped=not want(key))
    audio = next((row[f] for f in PATH_FIELDS if isinstance(row.get(f), str)), None)
    offset = row.get("offset")
    duration = row.get("duration")
    explicit = next((row[f] for f in KEY_FIELDS if isinstance(row.get(f), (str, int))), None)
    if explicit is not None:
        key = str(explicit)
    elif audio is not None:
        key = audio.rsplit(".", 1)[0] + (f"@{offset}" if offset else "")
    else:
        key = f"line{number + 1}"
    meta = {k: v for k, v in row.items() if k not in PATH_FIELDS and (explicit is None or k not in KEY_FIELDS)}
    item = Item(key=key, source=shard.path, audio_file=audio or "", index=index, meta=meta)
    if not want(key):
        item.skipped = True
    elif audio is None:
        item.error = f"line {number + 1} has none of the fields {', '.join(PATH_FIELDS)}"
    else:
        path = audio if os.path.isabs(audio) else os.path.join(folder, audio)
        inside = archives.member(path) if archives is not None and not os.path.exists(path) else None
        if inside is None:
            item.path = path
        else:
            item.audio_file = inside[1]
            archives.fill(item, *inside)
        item.offset = float(offset) if isinstance(offset, (int, float)) else None
        item.duration = float(duration) if isinstance(duration, (int, float)) and offset is not None else None
    return item
