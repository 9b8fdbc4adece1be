"""Tar archives in WebDataset layout, read as a stream.

Members that share a key form one sample (``dir/x.mp3`` + ``dir/x.json`` -> key
``dir/x``). As in WebDataset, the key of a member is its path up to the first dot
of its last component, and the members of a sample are adjacent in the archive.
A sample with several audio members yields one item per member, keyed by the
member's path without its last extension, sharing the sample's metadata.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator

from audiomill.errors import ShardError
from audiomill.items import Item, Shard
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
def read_tar(shard: Shard, want: Want) -> Iterator[Item]:
    try:
        archive = tarfile.open(shard.path, mode="r|*")
    except (OSError, tarfile.TarError) as exc:
        raise ShardError(f"cannot open archive {shard.path}: {exc}") from exc
    index = 0
    group_key: str | None = None
    group: list[tuple[tarfile.TarInfo, bytes | None]] = []
    in_place = getattr(archive.fileobj, "comptype", "") == "tar" and os.path.isfile(shard.path)
    try:
        with archive:
            for member in archive:
                name = member.name
                key, _ = sample_key(name)
                if group and key != group_key:
                    for item in _group_items(shard, group, index, want):
                        index += 1
                        yield item
                    group = []
                group_key = key
                if in_place and member.isfile() and member.size > IN_PLACE_BYTES and is_audio_name(name):
                    group.append((member, None))  # the stream skips its bytes; the decoder reads them in place
                else:
                    group.append((member, _read_member(archive, member, want, key)))
            for item in _group_items(shard, group, index, want):
                index += 1
                yield item
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"archive {shard.path} is corrupt after {index} items: {exc}") from exc


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo, want: Want, key: str) -> bytes | None:
    """Read a member's bytes now (a stream cannot come back), unless nobody wants them."""
    if not member.isfile() or unsafe_name_reason(member.name):
        return None
    if is_audio_name(member.name):
        member_key = member.name.rsplit(".", 1)[0]
        if not (want(key) or want(member_key)):
            return None
    elif member.size > MAX_SIDECAR_BYTES:
        return None
    handle = archive.extractfile(member)
    return handle.read() if handle is not None else None


def _group_items(
    shard: Shard, group: list[tuple[tarfile.TarInfo, bytes | None]], start: int, want: Want
) -> Iterator[Item]:
    meta: dict = {}
    audio: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for member, data in group:
        if member.isdir():
            continue
        if is_audio_name(member.name):
            audio.append((member, data))
            continue
        _, ext = sample_key(member.name)
        if data is None:
            continue
        if ext == "json":
            try:
                loaded = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(loaded, dict):
                meta.update(loaded)
        elif ext in TEXT_SIDECARS:
            try:
                meta[ext] = data.decode("utf-8").strip()
            except UnicodeDecodeError:
                pass
    for offset, (member, data) in enumerate(audio):
        key = sample_key(member.name)[0] if len(audio) == 1 else member.name.rsplit(".", 1)[0]
        item = Item(key=key, source=shard.path, audio_file=member.name, index=start + offset, meta=dict(meta))
        reason = unsafe_name_reason(member.name)
        if not want(key):
            item.skipped = True
        elif reason:
            item.error = reason
        elif not member.isfile():
            item.error = f"member {member.name!r} is not a regular file"
        elif data is None and member.size > IN_PLACE_BYTES:
            item.member_range = (member.offset_data, member.size)
        else:
            item.data = data if data is not None else b""
        yield item
