"""audiomill's stand-in for torchaudio.functional.resample gives torchaudio's samples, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from audiomill.codecs.torchaudio_compat import resample

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", ".cache", "reference-torchaudio")
RATES = [(24000, 16000), (44100, 16000), (16000, 24000), (48000, 44100), (22050, 24000)]


def test_resample_equals_torchaudio_bit_for_bit(tmp_path):
    if not os.path.isdir(os.path.join(REFERENCE, "torchaudio")):
        pytest.fail("no reference torchaudio: run 'python scripts/reference_torchaudio.py' (make test does)")
    torch.manual_seed(0)
    signal = torch.randn(2, 3, 24000 + 37)
    np.save(tmp_path / "in.npy", signal.numpy())
    script = (
        "import sys, numpy as np, torch, torchaudio\n"
        f"x = torch.from_numpy(np.load(r'{tmp_path / 'in.npy'}'))\n"
        f"for a, b in {RATES!r}:\n"
        f"    np.save(r'{tmp_path}' + f'/ref-{{a}}-{{b}}.npy', torchaudio.functional.resample(x, a, b).numpy())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.abspath(REFERENCE)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)
    for a, b in RATES:
        expected = np.load(tmp_path / f"ref-{a}-{b}.npy")
        ours = resample(signal, a, b).numpy()
        assert ours.shape == expected.shape
        assert np.array_equal(ours, expected), (a, b, np.abs(ours - expected).max())


def test_same_rate_is_a_no_op_and_other_methods_are_refused():
    x = torch.randn(100)
    assert resample(x, 16000, 16000) is x
    with pytest.raises(NotImplementedError):
        resample(x, 16000, 8000, resampling_method="sinc_interp_kaiser")


def _run_reference(tmp_path, body: str) -> None:
    """Run ``body`` with the reference torchaudio importable (its Python code, no compiled extension)."""
    if not os.path.isdir(os.path.join(REFERENCE, "torchaudio")):
        pytest.fail("no reference torchaudio: run 'python scripts/reference_torchaudio.py' (make test does)")
    script = "import sys, numpy as np, torch, torchaudio\n" + body
    env = {**os.environ, "PYTHONPATH": os.path.abspath(REFERENCE)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)


# X-codec2's (and w2v-BERT's) front end; then Kaldi's defaults with other windows
FBANK_OPTIONS = [
    dict(num_mel_bins=80, frame_length=25.0, frame_shift=10.0, sample_frequency=16000, window_type="povey",
         preemphasis_coefficient=0.97, remove_dc_offset=True, use_log_fbank=True, use_energy=False, dither=0.0,
         snip_edges=True, low_freq=20, high_freq=8000),
    dict(num_mel_bins=40, window_type="hamming"),
    dict(num_mel_bins=23, window_type="hanning", use_power=False, subtract_mean=True, round_to_power_of_two=False),
    dict(num_mel_bins=30, window_type="rectangular", use_log_fbank=False, low_freq=100, high_freq=-400),
]


def test_kaldi_fbank_equals_torchaudio(tmp_path):
    from audiomill.codecs.torchaudio_compat import fbank

    torch.manual_seed(1)
    signal = torch.randn(1, 16000 + 123) * 3000
    np.save(tmp_path / "in.npy", signal.numpy())
    _run_reference(tmp_path, (
        "from torchaudio.compliance.kaldi import fbank\n"
        "x = torch.from_numpy(np.load('in.npy'))\n"
        f"for i, options in enumerate({FBANK_OPTIONS!r}):\n"
        "    np.save(f'ref-{i}.npy', fbank(x, **options).numpy())\n"
    ))
    for i, options in enumerate(FBANK_OPTIONS):
        expected = np.load(tmp_path / f"ref-{i}.npy")
        ours = fbank(signal, **options).numpy()
        assert ours.shape == expected.shape
        assert np.array_equal(ours, expected), (options, np.abs(ours - expected).max())


# BiCodec's mel (Spark-TTS), then the defaults and an HTK scale
MEL_OPTIONS = [
    dict(sample_rate=16000, n_fft=1024, win_length=640, hop_length=320, f_min=10, f_max=None, n_mels=128, power=1,
         norm="slaney", mel_scale="slaney"),
    dict(sample_rate=16000),
    dict(sample_rate=24000, n_fft=512, hop_length=240, f_min=50.0, f_max=11000.0, n_mels=64, mel_scale="htk"),
]


def test_mel_spectrogram_equals_torchaudio(tmp_path):
    from audiomill.codecs.torchaudio_compat import _transforms_module

    transforms = _transforms_module("stand_in_transforms")
    torch.manual_seed(2)
    signal = torch.randn(2, 1, 16000 + 77)
    np.save(tmp_path / "in.npy", signal.numpy())
    _run_reference(tmp_path, (
        "from torchaudio.transforms import MelSpectrogram\n"
        "x = torch.from_numpy(np.load('in.npy'))\n"
        f"for i, options in enumerate({MEL_OPTIONS!r}):\n"
        "    mel = MelSpectrogram(**options)\n"
        "    np.save(f'ref-{i}.npy', mel(x).numpy())\n"
        "    torch.save(dict(mel.state_dict()), f'ref-{i}.pt')\n"
    ))
    for i, options in enumerate(MEL_OPTIONS):
        mel = transforms.MelSpectrogram(**options)
        expected = np.load(tmp_path / f"ref-{i}.npy")
        ours = mel(signal).numpy()
        assert ours.shape == expected.shape
        assert np.array_equal(ours, expected), (options, np.abs(ours - expected).max())
        reference_state = torch.load(tmp_path / f"ref-{i}.pt", weights_only=True)
        assert sorted(reference_state) == sorted(mel.state_dict())  # same buffer names: checkpoints load cleanly


def test_stand_in_answers_the_imports_codec_code_makes():
    """The stand-in is what ``import torchaudio`` gives when the real one fails (as on this CPU torch)."""
    code = (
        "from audiomill.codecs import torchaudio_compat\n"
        "print(torchaudio_compat.install())\n"
        "import torchaudio, torchaudio.compliance.kaldi, torchaudio.transforms as TT\n"
        "from torchaudio.functional.functional import _hz_to_mel, _mel_to_hz\n"
        "print(callable(torchaudio.compliance.kaldi.fbank), callable(TT.MelSpectrogram),"
        " round(_hz_to_mel(1000.0, 'slaney'), 6))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out[0] in ("stand-in", "torchaudio")
    assert out[1:] == ["True", "True", "15.0"]
