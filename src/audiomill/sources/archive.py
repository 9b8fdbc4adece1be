"""A tar archive read block by block and verified, so that damage is found and said, never passed over.

Python's streaming ``tarfile`` ends without a word at a header it cannot parse (a corrupt
or a cut-off one), and it never checks a ``.tar.gz``'s CRC: a damaged shard then passed as
complete, with members missing or garbage audio tokenized. This reader:

- checks every header's checksum; after a corrupt one it resynchronises on the next valid
  header (at a 512-byte boundary, with the ``ustar`` magic) and reports the bytes it lost;
- reports an archive cut off inside a member, inside a header, or before its end marker;
- decompresses gzip, bzip2 and xz itself, every member or stream to the end of the file,
  and knows how far the data is *verified*: up to the end of the last gzip member, bzip2
  or xz stream whose check passed (uncompressed tar has no checksum over data: all of
  it counts as read intact). Damage found later makes every member after that point
  untrusted, since it may have been read from bad bytes.

It understands the ustar, GNU (long names) and pax (``path``, ``size``) headers that
``tarfile`` and GNU tar write. Entries come out as :class:`Entry`; damage as :class:`Damage`,
after which reading goes on where it can.
"""

from __future__ import annotations

import bz2
import lzma
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

BLOCK = 512
CHUNK = 1 << 20  # decompressed bytes made at a time, at most
READ = 1 << 16  # compressed bytes read at a time: what a failed check takes with it unread
REGULAR, DIRECTORY, LINK, OTHER = "file", "directory", "link", "other"


@dataclass
class Entry:
    """One member: ``data`` holds its bytes when they were read (see :func:`read_archive`)."""

    name: str
    size: int
    kind: str  # file | directory | link | other
    offset_data: int  # where its data starts in the (decompressed) archive
    data: bytes | None = None

    @property
    def end(self) -> int:
        return self.offset_data + self.size


@dataclass
class Damage:
    """Damage at ``position`` (a byte of the archive file; for a compressed one, about where the
    decompressor stopped). ``member``: the member it cut short, if any. ``verified``: with a
    compressed archive whose check failed, how many bytes of the decompressed archive were
    verified before it (members ending after that are untrusted); None when no data is in doubt."""

    position: int
    reason: str
    member: str | None = None
    verified: int | None = None


class _StreamDamage(Exception):
    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))


class _Stream:
    """The archive's bytes, decompressed if need be, with how far they are verified."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "rb")
        head = self.file.read(6)
        self.file.seek(0)
        self.kind = next((kind for magic, kind in _MAGIC if head.startswith(magic)), "tar")
        self.size = os.fstat(self.file.fileno()).st_size
        self.buffer = bytearray()
        self.start = 0  # decompressed offset of buffer[0]
        self.offset = 0  # decompressed bytes consumed
        self.produced = 0  # decompressed bytes made so far
        self.verified = 0  # decompressed bytes covered by a check that passed
        self.raw_end = False
        self.ended = self.kind == "tar"  # no decompressor left to run
        self.decoder = self._decoder() if self.kind != "tar" else None

    def close(self) -> None:
        self.file.close()

    def _decoder(self):
        if self.kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.kind == "bzip2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    @property
    def position(self) -> int:
        """Where in the archive file reading is (about where, for a compressed one)."""
        return self.offset if self.kind == "tar" else self.file.tell()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the data)."""
        if self.kind == "tar":
            data = self.file.read(n)
            self.offset += len(data)
            self.verified = self.offset
            return data
        while len(self.buffer) < n and not self.ended:
            self._inflate()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        self.offset += len(data)
        return data

    def skip(self, n: int) -> int:
        """Pass over ``n`` bytes without keeping them; returns how many there were."""
        if self.kind == "tar":
            count = max(0, min(n, self.size - self.offset))
            self.offset += count
            self.file.seek(self.offset)
            self.verified = self.offset
            return count
        done = 0
        while done < n:
            part = len(self.read(min(CHUNK, n - done)))
            if part == 0:
                break
            done += part
        return done

    def drain(self) -> None:
        """Read (and so verify) what is left after the archive's end marker."""
        while not self.ended:
            self.buffer.clear()
            self._inflate()
        self.buffer.clear()

    def _raw(self) -> bytes:
        data = self.file.read(READ)
        if not data:
            self.raw_end = True
        return data

    def _inflate(self) -> None:
        decoder = self.decoder
        if decoder.eof:
            self._next_member()
            return
        if self.kind == "gzip":
            data = decoder.unconsumed_tail or self._raw()
        else:
            data = self._raw() if decoder.needs_input else b""
        try:
            out = decoder.decompress(data, CHUNK)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise _StreamDamage(f"{self.kind} data is damaged ({_said(exc)})", self.file.tell()) from None
        self.buffer += out
        self.produced += len(out)
        if decoder.eof:
            self.verified = self.produced
        elif not out and self.raw_end and not (self.kind == "gzip" and decoder.unconsumed_tail):
            raise _StreamDamage(f"the {self.kind} stream is cut off: it ends before its checksum", self.file.tell())

    def _next_member(self) -> None:
        """After a gzip member or a bzip2/xz stream: another one, zero padding, or the end."""
        rest = self.decoder.unused_data
        while True:
            rest = rest.lstrip(b"\x00")
            if rest:
                break
            rest = self._raw()
            if not rest:
                self.ended = True
                return
        self.decoder = self._decoder()
        try:
            out = self.decoder.decompress(rest, CHUNK)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise _StreamDamage(f"{self.kind} data is damaged ({_said(exc)})", self.file.tell()) from None
        self.buffer += out
        self.produced += len(out)
        if self.decoder.eof:
            self.verified = self.produced


def _said(exc: BaseException) -> str:
    """A decompressor's complaint, without zlib's "Error -3 while decompressing data: " prefix."""
    return str(exc).rpartition(": ")[2] or type(exc).__name__


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU's base-256 (high bit of the first byte set)."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _checksum_ok(block: bytes) -> bool:
    try:
        kept = _number(block[148:156])
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - sum(256 for b in block[:148] + block[156:] if b > 127)
    return kept in (unsigned, signed)


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
    """The records of a pax extended header: ``"%d %s=%s\\n"``, the length counting the whole record."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(data):
        space = data.find(b" ", at)
        if space < 0:
            break
        try:
            length = int(data[at:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1: at + length - 1]
        key, _, value = record.partition(b"=")
        fields[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        at += length
    return fields


def _kind(flag: bytes, name: str) -> str:
    if flag in (b"0", b"\x00", b"7"):
        return DIRECTORY if name.endswith("/") else REGULAR
    if flag == b"5":
        return DIRECTORY
    if flag in (b"1", b"2"):
        return LINK
    return OTHER


# Types whose size field counts no data in the archive (as tarfile reads them).
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")


def read_archive(path: str, read: Callable[[Entry], bool]) -> Iterator[Entry | Damage]:
    """The entries of the archive at ``path`` in order, and any damage where it is found.

    ``read(entry)`` says whether to read a regular member's bytes into ``entry.data``; the
    others are passed over (an uncompressed archive's by seeking). Raises OSError if the
    file cannot be opened (at once, not on the first entry)."""
    return _read(_Stream(path), read)


def _read(stream: _Stream, read: Callable[[Entry], bool]) -> Iterator[Entry | Damage]:
    try:
        yield from _Parser(stream, read).entries()
    except _StreamDamage as exc:
        yield Damage(exc.position, f"{exc.reason}, near byte {exc.position} of the file", verified=stream.verified)
    finally:
        stream.close()


class _Parser:
    def __init__(self, stream: _Stream, read: Callable[[Entry], bool]) -> None:
        self.stream = stream
        self.read = read
        self.pending: tuple[bytes, int] | None = None  # a block read ahead, and its offset

    def _damage(self, offset: int, reason: str, member: str | None = None) -> Damage:
        """Damage at ``offset`` of the tar data (a compressed archive's is given as the file's position)."""
        stream = self.stream
        if stream.kind == "tar":
            return Damage(offset, reason, member)
        return Damage(stream.position, f"{reason} (a byte of the decompressed {stream.kind} data)", member)

    def _block(self) -> tuple[bytes, int]:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            return pending
        offset = self.stream.offset
        return self.stream.read(BLOCK), offset

    def _end_marker(self) -> bool:
        """Whether the zero block just read starts the end marker (another zero block follows, or nothing)."""
        following, offset = self._block()
        if not following or following.count(0) == BLOCK:
            self.stream.drain()
            return True
        self.pending = (following, offset)
        return False

    def entries(self) -> Iterator[Entry | Damage]:
        stream = self.stream
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            block, at = self._block()
            if not block:
                if at == 0:
                    yield self._damage(0, "the archive is empty")
                else:
                    yield self._damage(at, f"the archive ends at byte {at} without its end marker: members after "
                                           "it may be missing")
                return
            if len(block) < BLOCK:
                yield self._damage(at, f"the archive is cut off at byte {at + len(block)}, inside a header")
                return
            if block.count(0) == BLOCK:
                if self._end_marker():
                    return
                yield self._damage(at, f"a lone zero block at byte {at}, in the middle of the archive")
                continue
            if not _checksum_ok(block):
                found = yield from self._resync(at)
                if found is None:
                    return
                block, at = found
                long_name, pax = None, {}
            flag = block[156:157]
            name = _text(block[:100])
            if block[257:263] == b"ustar\x00" and block[345]:
                name = f"{_text(block[345:500])}/{name}"
            try:
                size = int(pax["size"]) if "size" in pax else _number(block[124:136])
            except ValueError:
                size = -1
            if size < 0:
                yield self._damage(at, f"the header at byte {at} gives no valid size: the rest is unreadable")
                return
            if flag in (b"L", b"K", b"x", b"g"):  # data that describes the next member
                data = stream.read(size)
                stream.skip(-size % BLOCK)
                if len(data) < size:
                    yield self._damage(at, f"the archive is cut off at byte {stream.offset}, inside the extended "
                                           f"header at byte {at}")
                    return
                if flag == b"L":
                    long_name = _text(data)
                elif flag == b"x":
                    pax = _pax(data)
                continue
            name = pax.get("path", long_name if long_name is not None else name)
            long_name, pax = None, {}
            if flag in _NO_DATA:
                size = 0
            kind = _kind(flag, name)
            entry = Entry(name.rstrip("/") if kind == DIRECTORY else name, size, kind, stream.offset)
            if entry.kind == REGULAR and self.read(entry):
                data = stream.read(size)
                got = len(data)
                if got == size:
                    entry.data = data
            else:
                got = stream.skip(size)
            if got < size:
                yield self._damage(entry.offset_data + got, f"the archive is cut off at byte "
                                   f"{entry.offset_data + got}, inside member {name!r} ({got} of its {size} bytes)",
                                   member=name)
                return
            stream.skip(-size % BLOCK)
            yield entry

    def _resync(self, at: int):
        """After a corrupt header at ``at``: the next valid header and its offset, or None at the end.
        Yields the damage either way."""
        while True:
            block, offset = self._block()
            if len(block) < BLOCK:
                yield self._damage(at, f"a corrupt header at byte {at}, and no valid header after it: the rest of "
                                       f"the archive ({offset + len(block) - at} bytes) is lost")
                return None
            if block[257:262] == b"ustar" and _checksum_ok(block):
                yield self._damage(at, f"a corrupt header at byte {at}; reading resumed at the next valid header, "
                                       f"at byte {offset}: what lay between ({offset - at} bytes) is lost")
                return block, offset
            if block.count(0) == BLOCK and self._end_marker():
                yield self._damage(at, f"a corrupt header at byte {at}, then the archive's end marker at byte "
                                       f"{offset}: what lay between ({offset - at} bytes) is lost")
                return None
