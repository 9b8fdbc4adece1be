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
