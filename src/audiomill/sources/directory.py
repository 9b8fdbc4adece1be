"""A folder of audio files, searched recursively; a shard is a slice of its sorted list. (And a single
audio file given as an input: a shard of one.)

The key of a file is its path relative to the folder, without the extension; a
``x.json`` beside ``x.mp3`` becomes the item's metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from audiomill.items import Item, Shard
from audiomill.sources.listing import read_entries, walk_audio_files
from audiomill.sources.reader import Want, register


def list_audio_files(root: str, extensions: tuple[str, ...] | None = None) -> list[str]:
    """Audio files under ``root``, as sorted relative paths (``/``-separated)."""
    return sorted(walk_audio_files(root, extensions))


def _files(shard: Shard) -> Iterator[str]:
    if shard.listing is not None:  # planned: straight from the frozen listing
        yield from read_entries(shard.listing, shard.offset, shard.count or 0)
        return
    files = list_audio_files(shard.path, shard.extensions)
    yield from files[shard.start : len(files) if shard.count is None else shard.start + shard.count]


@register("dir")
def read_directory(shard: Shard, want: Want) -> Iterator[Item]:
    for index, rel in enumerate(_files(shard)):
        key = rel.rsplit(".", 1)[0]
        path = os.path.join(shard.path, rel)
        item = Item(key=key, source=shard.path, audio_file=rel, index=index)
        if not want(key):
            item.skipped = True
            yield item
            continue
        item.path = path
        item.meta = _sidecar(os.path.join(shard.path, key + ".json"))
        yield item


def _sidecar(path: str) -> dict:
    """The metadata of a ``x.json`` beside ``x.mp3``, if there is one."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


@register("file")
def read_file(shard: Shard, want: Want) -> Iterator[Item]:
    """A single audio file given as an input: a shard of one, keyed by its name without the extension."""
    folder, name = os.path.split(shard.path)
    item = Item(key=name.rsplit(".", 1)[0], source=shard.path, audio_file=name, index=0)
    if not want(item.key):
        item.skipped = True
    else:
        item.path = shard.path
        item.meta = _sidecar(os.path.join(folder, item.key + ".json"))
    yield item
