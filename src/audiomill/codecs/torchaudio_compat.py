"""The two torchaudio functions codec code calls, for torch builds torchaudio does not load with.

transformers' Higgs Audio v2 tokenizer resamples 24 -> 16 kHz with
``torchaudio.functional.resample`` (and imports torchaudio at module level). PyPI's
torchaudio wheels link against CUDA and fail to import with a CPU-only torch, so
:func:`install` puts a stand-in ``torchaudio`` module in place -- only when the real
one cannot be imported -- holding :func:`resample`: the same band-limited (Hann-windowed
sinc, 6 zero crossings, roll-off 0.99) polyphase resampler, written here, that gives
the same samples to float32 rounding (checked against torchaudio in the tests).
"""

from __future__ import annotations

import importlib.machinery
import logging
import math
import sys
import types

log = logging.getLogger(__name__)

STAND_IN_VERSION = "0+audiomill"


def resample(waveform, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6, rolloff: float = 0.99,
             resampling_method: str = "sinc_interp_hann", beta=None):
    """Resample the last axis of ``waveform`` from ``orig_freq`` to ``new_freq`` Hz."""
    import torch

    if resampling_method != "sinc_interp_hann":
        raise NotImplementedError(f"resampling_method={resampling_method!r}: only sinc_interp_hann is provided")
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError("frequencies must be positive")
    if orig_freq == new_freq:
        return waveform
    common = math.gcd(int(orig_freq), int(new_freq))
    up, down = int(new_freq) // common, int(orig_freq) // common  # output phases, input stride
    cutoff = min(up, down) * rolloff  # in units of the reduced rates
    half_width = math.ceil(lowpass_filter_width * down / cutoff)

    # kernel[phase, tap]: the filter that makes output phase `phase` from the input taps around it,
    # computed in the waveform's dtype and in torchaudio's order of operations, so that the
    # float32 rounding (and hence codes downstream) is the same
    dtype = waveform.dtype
    taps = torch.arange(-half_width, half_width + down, dtype=dtype)[None, :] / down
    x = torch.arange(0, -up, -1, dtype=dtype)[:, None] / up + taps
    x *= cutoff
    x = x.clamp(-lowpass_filter_width, lowpass_filter_width)
    hann = torch.cos(x * math.pi / lowpass_filter_width / 2) ** 2
    x *= math.pi
    kernel = torch.where(x == 0, torch.tensor(1.0).to(x), x.sin() / x)
    kernel *= hann * (cutoff / down)

    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    padded = torch.nn.functional.pad(flat, (half_width, half_width + down))
    out = torch.nn.functional.conv1d(padded[:, None, :], kernel[:, None, :], stride=down)  # [N, up, steps]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    length = math.ceil(up * shape[-1] / down)
    return out[:, :length].reshape(*shape[:-1], length)


def install() -> str:
    """Make ``import torchaudio`` work: the real package if it loads, else the stand-in.

    Returns which one is in use ("torchaudio" or "stand-in").
    """
    existing = sys.modules.get("torchaudio")
    if existing is not None:
        return "stand-in" if getattr(existing, "__version__", "") == STAND_IN_VERSION else "torchaudio"
    try:
        import torchaudio  # noqa: F401

        return "torchaudio"
    except Exception as exc:  # ImportError, or OSError from its compiled extension
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        log.debug("torchaudio does not load (%s): using audiomill's resample", exc)
    package = types.ModuleType("torchaudio")
    package.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None, is_package=True)
    package.__path__ = []
    package.__version__ = STAND_IN_VERSION
    functional = types.ModuleType("torchaudio.functional")
    functional.__spec__ = importlib.machinery.ModuleSpec("torchaudio.functional", None)
    functional.resample = resample
    package.functional = functional
    sys.modules["torchaudio"] = package
    sys.modules["torchaudio.functional"] = functional
    try:
        from transformers.utils import import_utils

        import_utils.is_torchaudio_available.cache_clear()
    except (ImportError, AttributeError):
        pass
    return "stand-in"
