from __future__ import annotations

import numpy as np
import pytest

from audiomill.audio import decode
from audiomill.corpus import encode_audio, speak
from audiomill.errors import DecodeError


@pytest.mark.parametrize("extension", ["mp3", "flac", "wav", "ogg"])
def test_every_format_decodes_to_mono_at_the_asked_rate(extension):
    samples, rate = speak("Testing one two three.")
    data = encode_audio(samples, rate, extension)
    audio = decode(data, 24000)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.sample_rate == 24000
    assert abs(len(audio.samples) / 24000 - len(samples) / rate) < 0.1  # MP3 adds encoder delay/padding
    assert np.abs(audio.samples).max() > 0.05
    assert audio.source_channels == (2 if extension == "mp3" else 1)


def test_stereo_is_averaged_to_mono(tmp_path):
    import soundfile

    left = np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    path = str(tmp_path / "s.wav")
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    audio = decode(path, 16000)
    np.testing.assert_allclose(audio.samples, left / 2, atol=1e-6)


def test_path_and_bytes_decode_alike(tmp_path):
    samples, rate = speak("Same audio either way.")
    data = encode_audio(samples, rate, "flac")
    path = tmp_path / "x.flac"
    path.write_bytes(data)
    np.testing.assert_array_equal(decode(str(path), 16000).samples, decode(data, 16000).samples)


def test_offset_and_duration_select_a_segment(tmp_path):
    import soundfile

    ramp = np.arange(48000, dtype=np.float32) / 48000
    path = str(tmp_path / "ramp.wav")
    soundfile.write(path, ramp, 16000, subtype="FLOAT")
    audio = decode(path, 16000, offset=1.0, duration=0.5)
    np.testing.assert_array_equal(audio.samples, ramp[16000:24000])


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"just some text, no audio at all\n" * 10, "not audio: neither libsndfile nor FFmpeg recognises its format"),
])
def test_unusable_bytes_raise_a_reason(data, reason, tmp_path):
    with pytest.raises(DecodeError, match=f"^{reason}$"):
        decode(data, 16000)
    path = tmp_path / "file.mp3"  # a path says the same (libsndfile alone would say "File does not exist")
    path.write_bytes(data)
    with pytest.raises(DecodeError, match=f"^{reason}$"):
        decode(str(path), 16000)


def test_reasons_do_not_vary_between_runs():
    reasons = set()
    for _ in range(3):
        try:
            decode(b"not audio" * 50, 16000)
        except DecodeError as exc:
            reasons.add(str(exc))
    assert len(reasons) == 1 and "0x" not in reasons.pop()


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        decode(str(tmp_path / "nope.wav"), 16000)
