"""The units of work: a shard of input, and the items it holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Shard:
    """One unit of scheduling, resume and output.

    ``name`` is the output stem (``000001.tar`` -> ``000001``); ``kind`` names the
    source that reads it. Directory and manifest shards are slices
    ``[start, start + count)`` of their sorted file list or of their lines; once
    planned, they are read from the plan's ``listing`` of their input (see
    :mod:`audiomill.sources.listing`), from byte ``offset``, whose entry is on line
    ``line`` (0-based) of the listing.
    """

    name: str
    kind: str
    path: str
    start: int = 0
    count: int | None = None
    listing: str | None = None
    offset: int = 0
    line: int = 0
    extensions: tuple[str, ...] | None = None  # --extensions: what is audio (None: the default set)
    columns: tuple[tuple[str, str], ...] = ()  # a dataset's columns by role (audio, text, speaker, id): hf shards
    add: tuple[tuple[str, str], ...] = ()  # --add KEY=VALUE: constants put into every item's metadata

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Shard":
        data = dict(data)
        if data.get("extensions") is not None:
            data["extensions"] = tuple(data["extensions"])
        for name in ("columns", "add"):
            data[name] = tuple(tuple(pair) for pair in data.get(name) or ())
        return cls(**data)


@dataclass
class Item:
    """One audio file of a shard, as a source yields it.

    Exactly one of ``data`` (bytes read from an archive), ``path`` (a file on
    disk) and ``member_range`` (``(start, size)`` of a large member inside the
    uncompressed archive ``source``, decoded in place) is set for an item to decode. ``error`` is set when the source already
    knows the item cannot be used (an unsafe member name, a duplicate key);
    ``skipped`` when the caller said it does not want the item (resume), in which
    case no audio was read.
    """

    key: str
    source: str
    audio_file: str
    index: int
    data: bytes | None = None
    path: str | None = None
    member_range: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    offset: float | None = None
    duration: float | None = None
    error: str | None = None
    skipped: bool = False
    position: int | None = None  # where in its archive the damage that cut this item short is


@dataclass
class SourceDamage:
    """Damage a source found in its shard (an archive cut off, a corrupt header, a failed checksum),
    yielded between the items where it was found. The shard is then not complete: what it holds
    before (and, past a corrupt header, after) the damage is kept, and the damage is recorded as
    an error at ``position`` (a byte of the shard's file), under ``key``: the item it cut short,
    else ``@<position>``. ``untrusted_from``: items from this index on may have been read from
    damaged data (a compressed archive whose check failed): their records are replaced by errors."""

    position: int
    reason: str
    key: str
    audio_file: str | None = None
    untrusted_from: int | None = None
