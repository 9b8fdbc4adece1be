"""Bytes or a path in, float32 mono at the wanted rate out.

libsndfile (through soundfile: WAV, FLAC, OGG/Vorbis/Opus, MP3) is tried first,
FFmpeg (through PyAV) second; soxr resamples. Anything that is not usable audio
raises :class:`DecodeError` with the reason, which becomes the file's error record.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import numpy as np

from audiomill.errors import DecodeError


@dataclass
class Audio:
    samples: np.ndarray  # float32, mono
    sample_rate: int
    source_rate: int
    source_channels: int


def decode(
    source: bytes | str,
    sample_rate: int,
    offset: float | None = None,
    duration: float | None = None,
) -> Audio:
    """Decode ``source`` (file bytes or a path) to mono float32 at ``sample_rate``."""
    if isinstance(source, bytes) and len(source) == 0:
        raise DecodeError("empty file")
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise DecodeError("file not found")
        if os.path.getsize(source) == 0:
            raise DecodeError("empty file")
    try:
        samples, rate = _decode_soundfile(source, offset, duration)
    except DecodeError:
        raise
    except Exception as first:  # libsndfile refuses the format: let FFmpeg try
        try:
            samples, rate = _decode_av(source, offset, duration)
        except DecodeError:
            raise
        except Exception as second:
            raise DecodeError(
                f"not decodable audio (libsndfile: {_short(first)}; FFmpeg: {_short(second)})"
            ) from None
    channels = samples.shape[1]
    if samples.shape[0] == 0:
        raise DecodeError("no audio samples")
    mono = samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise DecodeError("audio holds NaN or infinite samples")
    if rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return Audio(np.ascontiguousarray(mono, dtype=np.float32), sample_rate, rate, channels)


def _decode_soundfile(source: bytes | str, offset: float | None, duration: float | None) -> tuple[np.ndarray, int]:
    import soundfile

    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with soundfile.SoundFile(handle) as sound:
        rate = sound.samplerate
        if offset:
            sound.seek(min(int(round(offset * rate)), sound.frames))
        frames = -1 if duration is None else int(round(duration * rate))
        data = sound.read(frames, dtype="float32", always_2d=True)
    return data, rate


def _decode_av(source: bytes | str, offset: float | None, duration: float | None) -> tuple[np.ndarray, int]:
    import av

    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    chunks: list[np.ndarray] = []
    with av.open(handle, mode="r") as container:
        if not container.streams.audio:
            raise DecodeError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout=stream.layout.name if stream.layout else None)
        rate = stream.rate or stream.codec_context.sample_rate
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1, out.layout.nb_channels if out.layout else 1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1, out.layout.nb_channels if out.layout else 1))
    if not rate:
        raise DecodeError("no sample rate in the stream")
    data = np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)
    if offset:
        data = data[int(round(offset * rate)) :]
    if duration is not None:
        data = data[: int(round(duration * rate))]
    return data, rate


_NOISE = re.compile(r"^Error opening .*?: |\[Errno -?\d+\] |: '<none>'$| <_io\.\w+ object at 0x[0-9a-f]+>")


def _short(exc: Exception) -> str:
    """The reason in an exception, without object addresses or paths that vary run to run."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _NOISE.sub("", text).strip().rstrip(".")[:160]
