"""Tar archives in WebDataset layout, read as a stream.

Members that share a key form one sample (``dir/x.mp3`` + ``dir/x.json`` -> key
``dir/x``). As in WebDataset, the key of a member is its path up to the first dot
of its last component, and the members of a sample are adjacent in the archive.
A sample with several audio members yields one item per member, keyed by the
member's path without its last extension, sharing the sample's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from audiomill.errors import ShardError
from audiomill.items import Item, Shard, SourceDamage
from audiomill.sources.archive import DIRECTORY, REGULAR, Damage, Entry, read_archive
from audiomill.sources.reader import Want, is_audio_name, register, unsafe_name_reason

MAX_SIDECAR_BYTES = 1 << 20
IN_PLACE_BYTES = 8 << 20  # larger audio members of an uncompressed archive are decoded in place, not read
TEXT_SIDECARS = ("txt", "text", "cls", "lang", "speaker")


def sample_key(name: str) -> tuple[str, str]:
    """Split a member name into (key, extension) the WebDataset way."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext if dot else ""


@register("tar")
def read_tar(shard: Shard, want: Want) -> Iterator[Item | SourceDamage]:
    """The items of a tar shard, and any damage found in it (see :mod:`.archive`)."""
    try:
        in_place = _is_plain_tar(shard.path)
        entries = read_archive(shard.path, lambda entry: _wanted(entry, want, in_place, shard.extensions))
    except OSError as exc:
        raise ShardError(f"cannot open archive {shard.path}: {exc}") from exc
    ends: list[int] = []  # where each item's data ends in the archive, by item index
    group: list[Entry] = []

    def samples() -> Iterator[Item]:
        for item, end in _group_items(shard, group, len(ends), want, in_place):
            ends.append(end)
            yield item

    for entry in entries:
        if isinstance(entry, Damage):
            yield from samples()
            yield _source_damage(shard, entry, group, ends)
            group = []
        elif group and sample_key(entry.name)[0] != sample_key(group[0].name)[0]:
            yield from samples()
            group = [entry]
        else:
            group.append(entry)
    yield from samples()


def _is_plain_tar(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(6)
    return not head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))


def _wanted(entry: Entry, want: Want, in_place: bool, extensions: tuple[str, ...] | None) -> bool:
    """Whether to read a member's bytes now (a stream cannot come back)."""
    if unsafe_name_reason(entry.name):
        return False
    if is_audio_name(entry.name, extensions):
        if in_place and entry.size > IN_PLACE_BYTES:
            return False  # the decoder reads it from the archive itself
        key = sample_key(entry.name)[0]
        return want(key) or want(entry.name.rsplit(".", 1)[0])
    return entry.size <= MAX_SIDECAR_BYTES


def _source_damage(shard: Shard, damage: Damage, group: list[Entry], ends: list[int]) -> SourceDamage:
    """The damage as the runner sees it: keyed by the audio member it cut short, if it did."""
    key, audio_file = f"@{damage.position}", None
    if damage.member is not None and is_audio_name(damage.member, shard.extensions):
        key = sample_key(damage.member)[0]
        if any(is_audio_name(e.name, shard.extensions) and sample_key(e.name)[0] == key for e in group):
            key = damage.member.rsplit(".", 1)[0]  # one of a sample's several audio members
        audio_file = damage.member
    untrusted = None
    if damage.verified is not None:
        untrusted = next((i for i, end in enumerate(ends) if end > damage.verified), len(ends))
    return SourceDamage(damage.position, damage.reason, key, audio_file, untrusted)


def _group_items(
    shard: Shard, group: list[Entry], start: int, want: Want, in_place: bool
) -> Iterator[tuple[Item, int]]:
    """The items of one sample, each with where its data ends in the archive."""
    meta: dict = {}
    audio: list[Entry] = []
    for entry in group:
        if entry.kind == DIRECTORY:
            continue
        if is_audio_name(entry.name, shard.extensions):
            audio.append(entry)
            continue
        _, ext = sample_key(entry.name)
        if entry.data is None:
            continue
        if ext == "json":
            try:
                loaded = json.loads(entry.data)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(loaded, dict):
                meta.update(loaded)
        elif ext in TEXT_SIDECARS:
            try:
                meta[ext] = entry.data.decode("utf-8").strip()
            except UnicodeDecodeError:
                pass
    for offset, entry in enumerate(audio):
        key = sample_key(entry.name)[0] if len(audio) == 1 else entry.name.rsplit(".", 1)[0]
        item = Item(key=key, source=shard.path, audio_file=entry.name, index=start + offset, meta=dict(meta))
        reason = unsafe_name_reason(entry.name)
        if not want(key):
            item.skipped = True
        elif reason:
            item.error = reason
        elif entry.kind != REGULAR:
            item.error = f"member {entry.name!r} is not a regular file"
        elif entry.data is None and entry.size > IN_PLACE_BYTES and in_place:
            item.member_range = (entry.offset_data, entry.size)
        else:
            item.data = entry.data if entry.data is not None else b""
        yield item, entry.end
