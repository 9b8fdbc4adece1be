"""The verified tar reader against Python's tarfile on intact archives, and on damaged ones
what it finds, where, and what it still gives."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import tarfile

import pytest

from audiomill.sources.archive import Damage, Entry, read_archive

COMPRESS = {"": None, ".gz": lambda d: gzip.compress(d, mtime=0), ".bz2": bz2.compress, ".xz": lzma.compress}


def _archive(fmt: int, rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name in ["a/x.wav", "b" * 150 + "/long.flac", "d\u00e9j\u00e0/\u00fc.mp3", "bad\udcff.wav", "empty.wav"]:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) if name != "empty.wav" else b""
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("dir/")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        link = tarfile.TarInfo("link.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "a/x.wav"
        archive.addfile(link)
    return buffer.getvalue()


def _tarfile_view(path: str) -> list[tuple]:
    with tarfile.open(path, "r|*", errors="surrogateescape") as archive:
        return [(m.name, m.size, m.isreg(), m.offset_data, archive.extractfile(m).read() if m.isreg() else None)
                for m in archive]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_intact_archives_read_as_tarfile_reads_them(fmt, suffix, tmp_path):
    data = _archive(fmt, random.Random(fmt))
    path = tmp_path / f"x.tar{suffix}"
    path.write_bytes(COMPRESS[suffix](data) if COMPRESS[suffix] else data)
    mine = [(e.name, e.size, e.kind == "file", e.offset_data, e.data) for e in read_archive(str(path), lambda e: True)]
    assert mine == _tarfile_view(str(path))


def _six_members() -> tuple[bytes, list[int]]:
    rng = random.Random(2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for i in range(6):
            data = bytes(rng.randrange(256) for _ in range(5000))
            info = tarfile.TarInfo(f"m{i}.wav")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), [i * 5632 for i in range(6)]  # 512 header + 5000 data + 120 padding


def _read(tmp_path, data: bytes, name: str = "x.tar") -> list:
    path = tmp_path / name
    path.write_bytes(data)
    return [e.name if isinstance(e, Entry) else e for e in read_archive(str(path), lambda e: True)]


def test_damage_in_a_plain_archive_is_found_where_it_is(tmp_path):
    data, headers = _six_members()
    assert _read(tmp_path, data) == [f"m{i}.wav" for i in range(6)]
    assert _read(tmp_path, data[:7000]) == ["m0.wav", Damage(
        7000, "the archive is cut off at byte 7000, inside member 'm1.wav' (856 of its 5000 bytes)", "m1.wav")]
    assert _read(tmp_path, data[: headers[1] + 100]) == [
        "m0.wav", Damage(headers[1], f"the archive is cut off at byte {headers[1] + 100}, inside a header")]
    assert _read(tmp_path, data[: headers[2]]) == ["m0.wav", "m1.wav", Damage(
        headers[2], f"the archive ends at byte {headers[2]} without its end marker: members after it may be missing")]
    bad = bytearray(data)
    bad[headers[1] + 10] ^= 0xFF
    assert _read(tmp_path, bytes(bad)) == ["m0.wav", Damage(
        headers[1], f"a corrupt header at byte {headers[1]}; reading resumed at the next valid header, at byte "
                    f"{headers[2]}: what lay between (5632 bytes) is lost"), "m2.wav", "m3.wav", "m4.wav", "m5.wav"]
    bad = bytearray(data)
    bad[headers[5] + 10] ^= 0xFF
    assert _read(tmp_path, bytes(bad))[-1] == Damage(
        headers[5], f"a corrupt header at byte {headers[5]}, then the archive's end marker at byte "
                    f"{headers[5] + 5632}: what lay between (5632 bytes) is lost")


def test_a_compressed_archive_is_verified_to_its_end(tmp_path):
    data, headers = _six_members()
    packed = gzip.compress(data, mtime=0)
    crc = bytearray(packed)
    crc[-8] ^= 0x01
    (damage,) = [e for e in _read(tmp_path, bytes(crc), "x.tar.gz") if isinstance(e, Damage)]
    assert "gzip data is damaged (incorrect data check)" in damage.reason and damage.verified == 0
    found = _read(tmp_path, packed[:-100], "x.tar.gz")
    assert found[-1].reason.startswith("the gzip stream is cut off: it ends before its checksum")
    # two gzip members: the first is verified when the second fails its check
    two = bytearray(gzip.compress(data[: headers[3]], mtime=0) + gzip.compress(data[headers[3]:], mtime=0))
    two[-8] ^= 0x01
    found = _read(tmp_path, bytes(two), "x.tar.gz")
    assert found[:3] == ["m0.wav", "m1.wav", "m2.wav"] and found[-1].verified == headers[3]
    for name, compress in (("x.tar.bz2", bz2.compress), ("x.tar.xz", lzma.compress)):
        flipped = bytearray(compress(data))
        flipped[len(flipped) // 2] ^= 0x55
        damage = _read(tmp_path, bytes(flipped), name)[-1]
        assert isinstance(damage, Damage) and damage.verified == 0 and "data is damaged" in damage.reason
