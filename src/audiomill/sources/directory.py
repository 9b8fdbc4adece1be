"""A folder of audio files, searched recursively; a shard is a slice of its sorted list.

The key of a file is its path relative to the folder, without the extension; a
``x.json`` beside ``x.mp3`` becomes the item's metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from audiomill.items import Item, Shard
from audiomill.sources.reader import Want, is_audio_name, register


def list_audio_files(root: str) -> list[str]:
    """Audio files under ``root``, as sorted relative paths (``/``-separated)."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        for name in files:
            if is_audio_name(name) and not name.startswith("."):
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    found.sort()
    return found


@register("dir")
def read_directory(shard: Shard, want: Want) -> Iterator[Item]:
    files = list_audio_files(shard.path)
    end = len(files) if shard.count is None else shard.start + shard.count
    for index, rel in enumerate(files[shard.start : end]):
        key = rel.rsplit(".", 1)[0]
        path = os.path.join(shard.path, rel)
        item = Item(key=key, source=shard.path, audio_file=rel, index=index)
        if not want(key):
            item.skipped = True
            yield item
            continue
        item.path = path
        sidecar = os.path.join(shard.path, key + ".json")
        if os.path.isfile(sidecar):
            try:
                with open(sidecar, encoding="utf-8") as handle:
                    loaded = json.load(handle)
                if isinstance(loaded, dict):
                    item.meta = loaded
            except (OSError, ValueError):
                pass
        yield item
