"""Bytes or a path in, float32 mono at the wanted rate out.

libsndfile (through soundfile: WAV, FLAC, OGG/Vorbis/Opus, MP3) is tried first,
FFmpeg (through PyAV) second; soxr resamples. Anything that is not usable audio
raises :class:`DecodeError` with the reason, which becomes the file's error record.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

import numpy as np

from audiomill.errors import DecodeError


BLOCK_FRAMES = 1 << 16  # source frames read per step: memory stays flat however long the file


@dataclass(frozen=True)
class ByteRange:
    """A file stored inside another one (an uncompressed tar member), read in place."""

    path: str
    start: int
    size: int


Source = Union[bytes, str, ByteRange]


@dataclass
class Audio:
    samples: np.ndarray  # float32, mono
    sample_rate: int
    source_rate: int
    source_channels: int


def decode(
    source: Source,
    sample_rate: int,
    offset: float | None = None,
    duration: float | None = None,
) -> Audio:
    """Decode ``source`` (file bytes, a path or a byte range) to mono float32 at ``sample_rate``."""
    stream = open_audio(source, offset, duration)
    blocks = list(stream.blocks(sample_rate))
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return Audio(samples, sample_rate, stream.source_rate, stream.channels)


class AudioStream:
    """An opened audio file, read block by block: mono float32 at any rate, never whole in memory."""

    def __init__(self, backend: str, handle, rate: int, channels: int, offset, duration) -> None:
        self.backend = backend
        self._handle = handle
        self.source_rate = rate
        self.channels = channels
        self._offset = offset
        self._duration = duration

    def blocks(self, sample_rate: int) -> Iterator[np.ndarray]:
        """Yield the audio as consecutive mono blocks at ``sample_rate``; raises DecodeError if it has none."""
        for (block,) in self.blocks_at((sample_rate,)):
            if len(block):
                yield block

    def blocks_at(self, rates: tuple[int, ...]) -> Iterator[list[np.ndarray]]:
        """One decode, resampled to each of ``rates``: per step, a mono block at each rate (some may be
        empty while a resampler fills up); raises DecodeError if the file has no audio."""
        import soxr

        resamplers = [None if rate == self.source_rate else
                      soxr.ResampleStream(self.source_rate, rate, 1, dtype="float32", quality="HQ") for rate in rates]
        total = 0
        source = self._soundfile_blocks() if self.backend == "soundfile" else self._av_blocks()
        try:
            for block in source:
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                if not np.isfinite(mono).all():
                    raise DecodeError("audio holds NaN or infinite samples")
                total += len(mono)
                mono = np.ascontiguousarray(mono, dtype=np.float32)
                yield [mono if r is None else np.ascontiguousarray(r.resample_chunk(mono, last=False), dtype=np.float32)
                       for r in resamplers]
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"decoding failed after {total} samples: {_short(exc)}") from None
        finally:
            self.close()
        if total == 0:
            raise DecodeError("no audio samples")
        empty = np.zeros(0, np.float32)
        tails = [empty if r is None else np.ascontiguousarray(r.resample_chunk(empty, last=True), dtype=np.float32)
                 for r in resamplers]
        if any(len(t) for t in tails):
            yield tails

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _soundfile_blocks(self) -> Iterator[np.ndarray]:
        sound = self._handle
        if self._offset:
            sound.seek(min(int(round(self._offset * self.source_rate)), sound.frames))
        left = None if self._duration is None else int(round(self._duration * self.source_rate))
        while left is None or left > 0:
            want = BLOCK_FRAMES if left is None else min(BLOCK_FRAMES, left)
            block = sound.read(want, dtype="float32", always_2d=True)
            if len(block) == 0:
                return
            if left is not None:
                left -= len(block)
            yield block
            if len(block) < want:
                return

    def _av_blocks(self) -> Iterator[np.ndarray]:
        import av

        container = self._handle
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout=stream.layout.name if stream.layout else None)
        skip = int(round(self._offset * self.source_rate)) if self._offset else 0
        left = None if self._duration is None else int(round(self._duration * self.source_rate))

        def frames():
            for frame in container.decode(stream):
                yield from resampler.resample(frame)
            yield from resampler.resample(None)

        for out in frames():
            block = out.to_ndarray().reshape(-1, out.layout.nb_channels if out.layout else 1)
            if skip:
                dropped = min(skip, len(block))
                block, skip = block[dropped:], skip - dropped
            if left is not None:
                block = block[:left]
                left -= len(block)
            if len(block):
                yield block
            if left == 0:
                return


def open_audio(source: Source, offset: float | None = None, duration: float | None = None) -> AudioStream:
    """Open ``source`` with libsndfile, else FFmpeg; raises DecodeError with the reason if neither reads it."""
    if isinstance(source, bytes) and len(source) == 0:
        raise DecodeError("empty file")
    if isinstance(source, ByteRange) and source.size == 0:
        raise DecodeError("empty file")
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise DecodeError("file not found")
        if os.path.getsize(source) == 0:
            raise DecodeError("empty file")
    try:
        import soundfile

        sound = soundfile.SoundFile(_handle(source))
        return AudioStream("soundfile", sound, sound.samplerate, sound.channels, offset, duration)
    except Exception as first:  # libsndfile refuses the format: let FFmpeg try
        try:
            import av

            container = av.open(_handle(source), mode="r")
            if not container.streams.audio:
                container.close()
                raise DecodeError("no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate or stream.codec_context.sample_rate
            if not rate:
                container.close()
                raise DecodeError("no sample rate in the stream")
            channels = stream.layout.nb_channels if stream.layout else 1
            return AudioStream("av", container, rate, channels, offset, duration)
        except DecodeError:
            raise
        except Exception as second:
            said = _short(first)
            if isinstance(source, str) and said.startswith("File does not exist"):
                said = "Format not recognised"  # what libsndfile says of a path to a file it cannot read
            if said.startswith("Format not recognised") and "Invalid data found" in str(second):
                raise DecodeError("not audio: neither libsndfile nor FFmpeg recognises its format") from None
            raise DecodeError(f"not decodable audio (libsndfile: {said}; FFmpeg: {_short(second)})") from None


def _handle(source: Source):
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if isinstance(source, ByteRange):
        return FileSlice(source.path, source.start, source.size)
    return source


class FileSlice(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes of a file from ``start``."""

    def __init__(self, path: str, start: int, size: int) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115  (closed with the slice)
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        if count == 0:
            return 0
        self._file.seek(self._start + self._pos)
        data = self._file.read(count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


_NOISE = re.compile(r"^Error opening .*?: |\[Errno -?\d+\] |: '<none>'$| <_io\.\w+ object at 0x[0-9a-f]+>")


def _short(exc: Exception) -> str:
    """The reason in an exception, without object addresses or paths that vary run to run."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _NOISE.sub("", text).strip().rstrip(".")[:160]
