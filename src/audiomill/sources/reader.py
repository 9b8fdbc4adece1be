"""What a shard reader is: the registry sources add themselves to, and the names they accept."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from audiomill.items import Item, Shard

# What libsndfile or FFmpeg reads (the extension decides what a folder or an archive offers as audio).
AUDIO_EXTENSIONS = frozenset(
    {"mp3", "wav", "flac", "ogg", "oga", "opus", "m4a", "m4b", "aac", "wma", "webm", "aiff", "aif", "aifc", "au",
     "mp4", "sph", "caf", "wv", "w64", "rf64", "ac3", "mka", "amr", "spx", "mp2", "ape", "tta", "voc"}
)

Want = Callable[[str], bool]
Reader = Callable[[Shard, Want], Iterator[Item]]

READERS: dict[str, Reader] = {}


def register(kind: str) -> Callable[[Reader], Reader]:
    def wrap(reader: Reader) -> Reader:
        READERS[kind] = reader
        return reader

    return wrap


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
