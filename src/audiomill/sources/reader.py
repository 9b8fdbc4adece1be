"""What a shard reader is: the registry sources add themselves to, and the names they accept."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from audiomill.errors import UsageError
from audiomill.items import Item, Shard, SourceDamage

# What libsndfile or FFmpeg reads (the extension decides what a folder or an archive offers as audio).
AUDIO_EXTENSIONS = frozenset(
    {"mp3", "wav", "flac", "ogg", "oga", "opus", "m4a", "m4b", "aac", "wma", "webm", "aiff", "aif", "aifc", "au",
     "mp4", "sph", "caf", "wv", "w64", "rf64", "ac3", "mka", "amr", "spx", "mp2", "ape", "tta", "voc"}
)

Want = Callable[[str], bool]
Reader = Callable[[Shard, Want], Iterator[Item | SourceDamage]]

READERS: dict[str, Reader] = {}


def register(kind: str) -> Callable[[Reader], Reader]:
    def wrap(reader: Reader) -> Reader:
        READERS[kind] = reader
        return reader

    return wrap


def audio_extensions(given: Iterable[str] | None) -> tuple[str, ...] | None:
    """``--extensions``: the extensions (``mp3``, ``.FLAC``) of the files to read as audio, normalised;
    None for the default set (:data:`AUDIO_EXTENSIONS`)."""
    if given is None:
        return None
    names = sorted({name.strip().lstrip(".").lower() for name in given if name.strip()})
    bad = [name for name in names if not name.replace(".", "").isalnum()]
    if bad or not names:
        raise UsageError(f"--extensions {','.join(given)}: expected names such as mp3,flac,opus")
    return tuple(names)


def is_audio_name(name: str, extensions: tuple[str, ...] | None = None) -> bool:
    """Whether a file or member name is one to read as audio: by its extension, one of ``extensions``
    (default: every one libsndfile or FFmpeg reads)."""
    return "." in name and name.rsplit(".", 1)[1].lower() in (AUDIO_EXTENSIONS if extensions is None else extensions)


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
