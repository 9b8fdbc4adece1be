"""JSONL manifests: one audio file a line; a shard is a slice of the lines.

The audio path is read from ``audio_filepath`` (NeMo), ``audio`` or ``path``;
relative paths are resolved against the manifest's folder. The key is the line's
``key`` or ``id`` field, else the audio path as written (with ``@offset`` when the
line has an ``offset``). Every other field becomes metadata; ``offset`` and
``duration`` (seconds) select a segment of the file.
"""

from __future__ import annotations

import json
import os
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
    with handle:
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
            yield _line_item(shard, folder, number, index - shard.start, line, want)


def _line_item(shard: Shard, folder: str, number: int, index: int, line: str, want: Want) -> Item:
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
    meta = {k: v for k, v in row.items() if k not in PATH_FIELDS}
    item = Item(key=key, source=shard.path, audio_file=audio or "", index=index, meta=meta)
    if not want(key):
        item.skipped = True
    elif audio is None:
        item.error = f"line {number + 1} has none of the fields {', '.join(PATH_FIELDS)}"
    else:
        item.path = audio if os.path.isabs(audio) else os.path.join(folder, audio)
        item.offset = float(offset) if isinstance(offset, (int, float)) else None
        item.duration = float(duration) if isinstance(duration, (int, float)) and offset is not None else None
    return item
