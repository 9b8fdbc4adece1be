"""Real speech corpora made on the spot, for the demo, the tests and the benchmarks.

Speech comes from espeak-ng when it is installed, or from espeak-ng output saved
on another machine (``save_speech``, found through ``$AUDIOMILL_SPEECH_DIR``: lent
GPU machines have no espeak-ng); otherwise a voiced synthetic signal (harmonics
with a moving pitch and syllable-like envelope) stands in.
Files are encoded in the formats real corpora use: MP3 44.1 kHz stereo, FLAC
48 kHz, WAV 16 kHz, OGG Vorbis.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Audio tokenizers turn waveforms into sequences of discrete codes.",
    "Please call Stella and ask her to bring these things from the store.",
    "A large corpus of speech is stored in thousands of tar shards.",
    "The weather today is cloudy with a chance of rain in the evening.",
    "Resumable jobs lose nothing when the cluster kills them.",
    "She sells sea shells by the sea shore on sunny afternoons.",
    "Every file becomes exactly one record in the output.",
    "Numbers like twenty three and four hundred are spoken clearly.",
    "The graphics processor should never wait for the decoder.",
]

FORMATS = {  # extension: (soundfile format, subtype, sample rate, channels)
    "mp3": ("MP3", "MPEG_LAYER_III", 44100, 2),
    "flac": ("FLAC", "PCM_16", 48000, 1),
    "wav": ("WAV", "PCM_16", 16000, 1),
    "ogg": ("OGG", "VORBIS", 22050, 1),
}


SPEECH_DIR_ENV = "AUDIOMILL_SPEECH_DIR"


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def _saved_name(text: str, voice: str, speed: int) -> str:
    return f"{voice}-{speed}-{hashlib.sha1(text.encode()).hexdigest()[:16]}.wav"


def _espeak(text: str, voice: str, speed: int) -> bytes:
    return subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True,
                          capture_output=True).stdout


def save_speech(folder: str, texts: list[str] = SENTENCES) -> list[str]:
    """espeak-ng's speech for ``texts`` as WAV files in ``folder``, for ``$AUDIOMILL_SPEECH_DIR`` elsewhere."""
    if not have_espeak():
        raise RuntimeError("save_speech needs espeak-ng")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for text in texts:
        paths.append(os.path.join(folder, _saved_name(text, "en", 165)))
        with open(paths[-1], "wb") as handle:
            handle.write(_espeak(text, "en", 165))
    return paths


@functools.lru_cache(maxsize=64)
def speak(text: str, voice: str = "en", speed: int = 165) -> tuple[np.ndarray, int]:
    """Speech for ``text``: espeak-ng if installed (or its saved output), else a synthetic voiced signal."""
    import soundfile

    folder = os.environ.get(SPEECH_DIR_ENV)
    if folder and os.path.exists(saved := os.path.join(folder, _saved_name(text, voice, speed))):
        samples, rate = soundfile.read(saved, dtype="float32")
        return samples, rate
    if have_espeak():
        samples, rate = soundfile.read(io.BytesIO(_espeak(text, voice, speed)), dtype="float32")
        return samples, rate
    return synthetic_voice(0.075 * len(text), seed=sum(map(ord, text))), 22050


def synthetic_voice(seconds: float, seed: int = 0, rate: int = 22050) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    return (0.25 * voice * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def speech(seconds: float, seed: int = 0) -> tuple[np.ndarray, int]:
    """At least ``seconds`` of speech, sentences one after another."""
    parts: list[np.ndarray] = []
    total = 0
    rate = 22050
    index = seed
    while total < seconds * rate:
        samples, rate = speak(SENTENCES[index % len(SENTENCES)])
        parts.append(samples)
        parts.append(np.zeros(rate // 4, np.float32))
        total += len(samples) + rate // 4
        index += 1
    return np.concatenate(parts)[: int(seconds * rate)], rate


# Formats libsndfile does not write, made with FFmpeg (PyAV): extension -> (container, codec, sample rate)
FFMPEG_FORMATS = {
    "m4a": ("ipod", "aac", 44100), "m4b": ("ipod", "aac", 22050), "aac": ("adts", "aac", 32000),
    "opus": ("ogg", "libopus", 48000), "webm": ("webm", "libopus", 48000), "aiff": ("aiff", "pcm_s16be", 44100),
    "aif": ("aiff", "pcm_s24be", 16000), "caf": ("caf", "pcm_s16le", 24000), "wv": ("wv", "wavpack", 44100),
    "ac3": ("ac3", "ac3", 48000), "w64": ("w64", "pcm_s16le", 16000),
}


def encode_with_ffmpeg(samples: np.ndarray, rate: int, extension: str) -> bytes:
    """``samples`` (mono) in one of :data:`FFMPEG_FORMATS`, through PyAV's FFmpeg."""
    import av

    container, codec, target_rate = FFMPEG_FORMATS[extension]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=target_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32)[None, :], format="flt",
                                           layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=target_rate)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def encode_audio(samples: np.ndarray, rate: int, extension: str) -> bytes:
    """``samples`` (mono) as a file of the given format, resampled and channel-expanded as real corpora are."""
    import soundfile
    import soxr

    if extension in FFMPEG_FORMATS:
        return encode_with_ffmpeg(samples, rate, extension)
    fmt, subtype, target_rate, channels = FORMATS[extension]
    data = soxr.resample(samples, rate, target_rate) if rate != target_rate else samples
    if channels == 2:  # a slightly different right channel, as in real stereo
        data = np.stack([data, 0.8 * data], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, data, target_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def write_tar(path: str, members: list[tuple[str, bytes]]) -> None:
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            archive.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


def make_speech_shards(
    folder: str, shards: int = 2, files_per_shard: int = 6, long_seconds: float = 0.0
) -> list[str]:
    """Tar shards of real speech in mixed formats with JSON sidecars; returns their paths.

    ``long_seconds`` > 0 adds one file of that length to the first shard.
    """
    os.makedirs(folder, exist_ok=True)
    extensions = list(FORMATS)
    paths = []
    count = 0
    for shard in range(shards):
        members: list[tuple[str, bytes]] = []
        for _ in range(files_per_shard):
            text = SENTENCES[count % len(SENTENCES)]
            samples, rate = speak(text, speed=140 + 10 * (count % 5))
            extension = extensions[count % len(extensions)]
            key = f"spk{count % 3}/utt{count:05d}"
            members.append((f"{key}.{extension}", encode_audio(samples, rate, extension)))
            members.append((f"{key}.json", json.dumps({"text": text, "speaker": f"spk{count % 3}"}).encode()))
            count += 1
        if shard == 0 and long_seconds > 0:
            samples, rate = speech(long_seconds)
            members.append(("long/talk00000.mp3", encode_audio(samples, rate, "mp3")))
            members.append(("long/talk00000.json", json.dumps({"text": "long talk"}).encode()))
        path = os.path.join(folder, f"{shard:06d}.tar")
        write_tar(path, members)
        paths.append(path)
    return paths
