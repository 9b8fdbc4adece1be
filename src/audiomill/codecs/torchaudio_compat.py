"""The few torchaudio functions codec code calls, for torch builds torchaudio does not load with.

PyPI's torchaudio wheels link against CUDA and fail to import with a CPU-only torch,
yet the codecs' reference code calls into it:

- transformers' Higgs Audio v2 tokenizer resamples 24 -> 16 kHz with
  ``torchaudio.functional.resample`` (and imports torchaudio at module level);
- transformers' X-codec2 feature extractor computes Kaldi filter banks with
  ``torchaudio.compliance.kaldi.fbank``;
- Spark-TTS' BiCodec builds a ``torchaudio.transforms.MelSpectrogram`` (Slaney mel);
- Amphion's RepCodec imports ``torchaudio.functional.functional._hz_to_mel``.

:func:`install` puts a stand-in ``torchaudio`` package in place -- only when the real
one cannot be imported -- holding those functions, written here and checked in the
tests against torchaudio's own Python code for identical output.
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


MILLISECONDS = 0.001
_EPSILON = 1.1920928955078125e-07  # float32 machine epsilon, Kaldi's floor before the log


def _kaldi_window(kind: str, size: int, dtype):
    import torch

    if kind == "povey":
        return torch.hann_window(size, periodic=False, dtype=dtype).pow(0.85)
    if kind == "hanning":
        return torch.hann_window(size, periodic=False, dtype=dtype)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=dtype)
    if kind == "rectangular":
        return torch.ones(size, dtype=dtype)
    raise NotImplementedError(f"window_type={kind!r}: povey, hanning, hamming or rectangular")


def _kaldi_mel(freq):
    return 1127.0 * (1.0 + freq / 700.0).log()


def kaldi_mel_banks(num_bins: int, padded_window: int, sample_frequency: float, low_freq: float,
                    high_freq: float):
    """Kaldi's triangular mel filters ``[num_bins, padded_window // 2]`` (no VTLN warping)."""
    import torch

    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"low_freq {low_freq} and high_freq {high_freq} do not fit Nyquist {nyquist}")
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    mel = _kaldi_mel(sample_frequency / padded_window * torch.arange(padded_window / 2)).unsqueeze(0)
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    return torch.max(torch.zeros(1), torch.min(rising, falling))


def fbank(waveform, blackman_coeff: float = 0.42, channel: int = -1, dither: float = 0.0,
          energy_floor: float = 1.0, frame_length: float = 25.0, frame_shift: float = 10.0,
          high_freq: float = 0.0, htk_compat: bool = False, low_freq: float = 20.0, min_duration: float = 0.0,
          num_mel_bins: int = 23, preemphasis_coefficient: float = 0.97, raw_energy: bool = True,
          remove_dc_offset: bool = True, round_to_power_of_two: bool = True, sample_frequency: float = 16000.0,
          snip_edges: bool = True, subtract_mean: bool = False, use_energy: bool = False,
          use_log_fbank: bool = True, use_power: bool = True, vtln_high: float = -500.0, vtln_low: float = 100.0,
          vtln_warp: float = 1.0, window_type: str = "povey"):
    """Kaldi ``compute-fbank-feats`` on ``waveform [channels, samples]`` -> ``[frames, num_mel_bins]``.

    The options codec front ends use (no dither, no VTLN, frames inside the signal) are
    provided; the others are refused rather than silently ignored.
    """
    import torch

    if dither != 0.0 or vtln_warp != 1.0 or not snip_edges or use_energy:
        raise NotImplementedError("fbank: dither, vtln_warp, snip_edges=False and use_energy are not provided")
    signal = waveform[max(channel, 0), :]
    shift = int(sample_frequency * frame_shift * MILLISECONDS)
    size = int(sample_frequency * frame_length * MILLISECONDS)
    padded = 2 ** (size - 1).bit_length() if round_to_power_of_two else size
    if not 2 <= size <= len(signal):
        raise ValueError(f"fbank: a {size}-sample window does not fit {len(signal)} samples")
    if len(signal) < min_duration * sample_frequency:
        return torch.empty(0, dtype=signal.dtype)
    frames = signal.as_strided((1 + (len(signal) - size) // shift, size), (shift * signal.stride(0), signal.stride(0)))
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1).unsqueeze(1)
    if preemphasis_coefficient != 0.0:
        previous = torch.nn.functional.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
        frames = frames - preemphasis_coefficient * previous[:, :-1]
    frames = frames * _kaldi_window(window_type, size, signal.dtype).unsqueeze(0)
    if padded != size:
        frames = torch.nn.functional.pad(frames.unsqueeze(0), (0, padded - size)).squeeze(0)
    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = kaldi_mel_banks(num_mel_bins, padded, sample_frequency, low_freq, high_freq).to(signal.dtype)
    banks = torch.nn.functional.pad(banks, (0, 1))
    energies = torch.mm(spectrum, banks.T)
    if use_log_fbank:
        energies = torch.max(energies, torch.tensor(_EPSILON, dtype=signal.dtype)).log()
    if subtract_mean:
        energies = energies - energies.mean(dim=0).unsqueeze(0)
    return energies


def _hz_to_mel(freq: float, mel_scale: str = "htk") -> float:
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + freq / 700.0)
    if mel_scale != "slaney":
        raise ValueError('mel_scale should be one of "htk" or "slaney".')
    linear = 200.0 / 3
    if freq >= 1000.0:
        return 1000.0 / linear + math.log(freq / 1000.0) / (math.log(6.4) / 27.0)
    return freq / linear


def _mel_to_hz(mels, mel_scale: str = "htk"):
    import torch

    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    if mel_scale != "slaney":
        raise ValueError('mel_scale should be one of "htk" or "slaney".')
    linear = 200.0 / 3
    freqs = linear * mels
    log_part = mels >= 1000.0 / linear
    freqs[log_part] = 1000.0 * torch.exp(math.log(6.4) / 27.0 * (mels[log_part] - 1000.0 / linear))
    return freqs


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int,
                    norm: str | None = None, mel_scale: str = "htk"):
    """Triangular mel filters ``[n_freqs, n_mels]`` over linear-frequency bins, as librosa makes them."""
    import torch

    if norm not in (None, "slaney"):
        raise ValueError('norm must be one of None or "slaney"')
    bins = torch.linspace(0, sample_rate // 2, n_freqs)
    points = _mel_to_hz(torch.linspace(_hz_to_mel(f_min, mel_scale), _hz_to_mel(f_max, mel_scale), n_mels + 2),
                        mel_scale)
    widths = points[1:] - points[:-1]
    slopes = points.unsqueeze(0) - bins.unsqueeze(1)
    falling = (-1.0 * slopes[:, :-2]) / widths[:-1]
    rising = slopes[:, 2:] / widths[1:]
    banks = torch.max(torch.zeros(1), torch.min(falling, rising))
    if norm == "slaney":
        banks *= (2.0 / (points[2:n_mels + 2] - points[:n_mels])).unsqueeze(0)
    return banks


def _transforms_module(name: str) -> types.ModuleType:
    """``torchaudio.transforms`` with ``Spectrogram``, ``MelScale`` and ``MelSpectrogram``.

    The submodule and buffer names are torchaudio's (``spectrogram.window``,
    ``mel_scale.fb``), so checkpoints that saved them load without unexpected keys.
    """
    import torch

    class Spectrogram(torch.nn.Module):
        def __init__(self, n_fft: int = 400, win_length: int | None = None, hop_length: int | None = None,
                     pad: int = 0, window_fn=torch.hann_window, power: float | None = 2.0,
                     normalized: bool = False, wkwargs: dict | None = None, center: bool = True,
                     pad_mode: str = "reflect", onesided: bool = True) -> None:
            super().__init__()
            if normalized or power is None:
                raise NotImplementedError("Spectrogram: normalized and complex output are not provided")
            self.n_fft = n_fft
            self.win_length = win_length if win_length is not None else n_fft
            self.hop_length = hop_length if hop_length is not None else self.win_length // 2
            self.register_buffer("window", window_fn(self.win_length, **(wkwargs or {})))
            self.pad, self.power, self.center, self.pad_mode, self.onesided = pad, power, center, pad_mode, onesided

        def forward(self, waveform):
            if self.pad > 0:
                waveform = torch.nn.functional.pad(waveform, (self.pad, self.pad), "constant")
            shape = waveform.size()
            spec = torch.stft(waveform.reshape(-1, shape[-1]), n_fft=self.n_fft, hop_length=self.hop_length,
                              win_length=self.win_length, window=self.window, center=self.center,
                              pad_mode=self.pad_mode, normalized=False, onesided=self.onesided, return_complex=True)
            spec = spec.reshape(shape[:-1] + spec.shape[-2:])
            return spec.abs() if self.power == 1.0 else spec.abs().pow(self.power)

    class MelScale(torch.nn.Module):
        def __init__(self, n_mels: int = 128, sample_rate: int = 16000, f_min: float = 0.0,
                     f_max: float | None = None, n_stft: int = 201, norm: str | None = None,
                     mel_scale: str = "htk") -> None:
            super().__init__()
            f_max = f_max if f_max is not None else float(sample_rate // 2)
            if f_min > f_max:
                raise ValueError(f"Require f_min: {f_min} <= f_max: {f_max}")
            self.register_buffer("fb", melscale_fbanks(n_stft, f_min, f_max, n_mels, sample_rate, norm, mel_scale))

        def forward(self, specgram):
            return torch.matmul(specgram.transpose(-1, -2), self.fb).transpose(-1, -2)

    class MelSpectrogram(torch.nn.Module):
        def __init__(self, sample_rate: int = 16000, n_fft: int = 400, win_length: int | None = None,
                     hop_length: int | None = None, f_min: float = 0.0, f_max: float | None = None, pad: int = 0,
                     n_mels: int = 128, window_fn=torch.hann_window, power: float = 2.0, normalized: bool = False,
                     wkwargs: dict | None = None, center: bool = True, pad_mode: str = "reflect",
                     onesided: bool | None = None, norm: str | None = None, mel_scale: str = "htk") -> None:
            super().__init__()
            self.spectrogram = Spectrogram(n_fft=n_fft, win_length=win_length, hop_length=hop_length, pad=pad,
                                           window_fn=window_fn, power=power, normalized=normalized,
                                           wkwargs=wkwargs, center=center, pad_mode=pad_mode, onesided=True)
            self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max, n_fft // 2 + 1, norm, mel_scale)

        def forward(self, waveform):
            return self.mel_scale(self.spectrogram(waveform))

    module = _module(name)
    module.Spectrogram, module.MelScale, module.MelSpectrogram = Spectrogram, MelScale, MelSpectrogram
    return module


def _module(name: str, package: bool = False) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        module.__path__ = []
    return module


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
    package = _module("torchaudio", package=True)
    package.__version__ = STAND_IN_VERSION
    functional = _module("torchaudio.functional", package=True)
    inner = _module("torchaudio.functional.functional")
    compliance = _module("torchaudio.compliance", package=True)
    kaldi = _module("torchaudio.compliance.kaldi")
    transforms = _transforms_module("torchaudio.transforms")
    for holder in (functional, inner):
        holder.resample, holder.melscale_fbanks = resample, melscale_fbanks
        holder._hz_to_mel, holder._mel_to_hz = _hz_to_mel, _mel_to_hz
    functional.functional = inner
    kaldi.fbank = fbank
    compliance.kaldi = kaldi
    package.functional, package.compliance, package.transforms = functional, compliance, transforms
    for module in (package, functional, inner, compliance, kaldi, transforms):
        sys.modules[module.__name__] = module
    try:
        from transformers.utils import import_utils

        import_utils.is_torchaudio_available.cache_clear()
    except (ImportError, AttributeError):
        pass
    return "stand-in"
