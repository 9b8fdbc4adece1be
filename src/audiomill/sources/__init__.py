"""Sources: read one shard and yield its items, in the shard's own order.

Each source module registers a reader under the shard kind it handles; the
runner only calls :func:`read_shard`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from audiomill.items import Item, Shard

AUDIO_EXTENSIONS = frozenset(
    {"mp3", "wav", "flac", "ogg", "oga", "opus", "m4a", "aac", "wma", "webm", "aiff", "aif", "au", "mp4", "sph"}
)

Want = Callable[[str], bool]
Reader = Callable[[Shard, Want], Iterator[Item]]

_READERS: dict[str, Reader] = {}


def register(kind: str) -> Callable[[Reader], Reader]:
    def wrap(reader: Reader) -> Reader:
        _READERS[kind] = reader
        return reader

    return wrap


def read_shard(shard: Shard, want: Want = lambda key: True) -> Iterator[Item]:
    """Yield every item of ``shard`` in order.

    ``want(key)`` decides whether the item's audio is read at all: items it
    refuses are still yielded, with ``skipped=True`` and no data, so that the
    caller knows the shard's full order.
    """
    _load_readers()
    try:
        reader = _READERS[shard.kind]
    except KeyError:
        raise ValueError(f"unknown shard kind {shard.kind!r}") from None
    seen: set[str] = set()
    for item in reader(shard, want):
        if item.key in seen:
            item.error = item.error or f"duplicate key {item.key!r} in shard"
            item.key = f"{item.key}#dup{item.index}"
            item.data = item.member_range = None
        seen.add(item.key)
        yield item


def is_audio_name(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[1].lower() in AUDIO_EXTENSIONS


def unsafe_name_reason(name: str) -> str | None:
    """Why a member or file name must not be used, or None if it is safe."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"unsafe member name {name!r}: absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return f"unsafe member name {name!r}: escapes its folder"
    if "\x00" in name:
        return f"unsafe member name {name!r}: NUL byte"
    return None


def _load_readers() -> None:
    from audiomill.sources import directory, manifest, tar  # noqa: F401  (they register themselves)
