"""Sources: read one shard and yield its items, in the shard's own order.

Each source module registers a reader (see :mod:`.reader`) under the shard kind it
handles; the runner only calls :func:`read_shard`.
"""

from __future__ import annotations

from collections.abc import Iterator

from audiomill.items import Item, Shard, SourceDamage
from audiomill.sources.reader import READERS, Want


def read_shard(shard: Shard, want: Want = lambda key: True) -> Iterator[Item | SourceDamage]:
    """Yield every item of ``shard`` in order, and any damage a source finds in it where it finds it.

    ``want(key)`` decides whether the item's audio is read at all: items it
    refuses are still yielded, with ``skipped=True`` and no data, so that the
    caller knows the shard's full order.
    """
    _load_readers()
    try:
        reader = READERS[shard.kind]
    except KeyError:
        raise ValueError(f"unknown shard kind {shard.kind!r}") from None
    seen: set[str] = set()
    for item in reader(shard, want):
        if isinstance(item, SourceDamage):
            yield item
            continue
        if shard.add:
            item.meta = {**item.meta, **dict(shard.add)}
        if item.key in seen:
            item.error = item.error or f"duplicate key {item.key!r} in shard"
            item.key = f"{item.key}#dup{item.index}"
            item.data = item.member_range = None
        seen.add(item.key)
        yield item


def _load_readers() -> None:
    from audiomill.sources import directory, hf, manifest, tar  # noqa: F401  (they register themselves)
