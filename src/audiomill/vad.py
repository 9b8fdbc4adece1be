"""Voice activity: per-frame speech decisions from a backend, and what is computed from them.

Two backends, both with their model inside their wheel (nothing is downloaded):

- ``silero`` (silero-vad, MIT): the "sequence" ONNX export the wheel ships, run here with
  onnxruntime on blocks of up to 512 frames of 512 samples (32 ms), each frame prefixed
  with the last 64 samples of the one before, the LSTM state carried from block to block:
  the probabilities of silero's own ``SileroVADSequence.audio_forward``, in a stream, so a
  long file is never whole in memory. The package is not imported (its ``__init__`` sets
  torch to one thread for the whole process); its model file is found on disk.
- ``ten-vad`` (TEN-VAD, Apache-2.0 with extra conditions; needs Debian's ``libc++1``):
  ``TenVad(hop_size, threshold).process(frame)`` on every whole frame of int16 samples
  (clipped, never wrapped), as AMELA calls it.

A backend gives, per frame, a probability and a decision (``flag``: silero's is its
probability at or above the threshold, TEN-VAD's is its own). :func:`segments` turns the
probabilities into speech segments (hysteresis, minimum speech and silence, padding);
:func:`amela_statistics` and :func:`amela_splits` compute AMELA's statistics from the
flags exactly as AMELA's ``vad.py`` defines them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from audiomill.errors import UsageError

RATE = 16000
BACKENDS = ("silero", "ten-vad")
EXTRAS = {"silero": "vad", "ten-vad": "ten-vad"}


@dataclass(frozen=True)
class VadOptions:
    """How frames become segments. Tuned on espeak-ng speech with pauses of 0.3 to 2 s, silent or
    with noise at -40 dBFS (tests/test_vad.py): silero's own settings (threshold 0.5, ends below
    0.35, 100 ms of silence, 30 ms padding) end speech 0.1-0.4 s late into the noisy pauses, and
    TEN-VAD's up to 0.75 s; bringing each end back to where the level falls to within 6 dB of
    the pause's (:func:`refine_end`) puts every boundary within 0.07 s of the truth."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # where speech ends (default: threshold - 0.15, at least 0.01)
    min_speech: float = 0.25  # seconds: shorter speech is dropped
    min_silence: float = 0.1  # seconds: shorter pauses do not end speech
    speech_pad: float = 0.03  # seconds added before and after each segment
    refine: float = 1.0  # seconds before the model's end searched for the level's (0: the model's end)
    above_pause: float = 6.0  # dB over the pause's level that is still speech

    @property
    def end_threshold(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)


# -- backends -------------------------------------------------------------------------------------

class SileroStream:
    """One file's frames through silero's sequence model, a window at a time."""

    FRAME, CONTEXT, BLOCK = 512, 64, 512

    def __init__(self, session, threshold: float) -> None:
        self.session = session
        self.threshold = threshold
        self.hidden = np.zeros((1, 1, 128), np.float32)
        self.cell = np.zeros((1, 1, 128), np.float32)
        self.context = np.zeros(self.CONTEXT, np.float32)
        self.pending = np.zeros(0, np.float32)
        self.probs: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        samples = np.concatenate([self.pending, samples.astype(np.float32, copy=False)]) if len(self.pending) else samples
        whole = len(samples) // self.FRAME * self.FRAME
        self._run(samples[:whole])
        self.pending = samples[whole:].copy()

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pending):  # the last frame, zero-padded
            last = np.zeros(self.FRAME, np.float32)
            last[: len(self.pending)] = self.pending
            self._run(last)
            self.pending = np.zeros(0, np.float32)
        probs = np.concatenate(self.probs) if self.probs else np.zeros(0, np.float32)
        return probs, (probs >= self.threshold).astype(np.uint8)

    def _run(self, samples: np.ndarray) -> None:
        frames = samples.reshape(-1, self.FRAME)
        for first in range(0, len(frames), self.BLOCK):
            block = frames[first : first + self.BLOCK]
            contexts = np.empty((len(block), self.CONTEXT), np.float32)
            contexts[0] = self.context
            contexts[1:] = block[:-1, -self.CONTEXT:]
            self.context = block[-1, -self.CONTEXT:].copy()
            probs, self.hidden, self.cell = self.session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, block], axis=1), "h": self.hidden, "c": self.cell})
            self.probs.append(np.asarray(probs, np.float32).reshape(-1))


class TenVadStream:
    """One file's frames through TEN-VAD: whole frames of ``hop`` int16 samples (a last partial one is dropped)."""

    def __init__(self, make, hop: int) -> None:
        self.vad = make()
        self.hop = hop
        self.pending = np.zeros(0, np.float32)
        self.probs: list[float] = []
        self.flags: list[int] = []

    def push(self, samples: np.ndarray) -> None:
        samples = np.concatenate([self.pending, samples]) if len(self.pending) else samples
        whole = len(samples) // self.hop * self.hop
        pcm = to_int16(samples[:whole])
        process = self.vad.process
        for start in range(0, whole, self.hop):
            prob, flag = process(pcm[start : start + self.hop])
            self.probs.append(prob)
            self.flags.append(max(0, int(flag)))  # (its first frame's flag may be -1 at some hops)
        self.pending = samples[whole:].copy()

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.probs, np.float32), np.asarray(self.flags, np.uint8)


def to_int16(samples: np.ndarray, full_scale: float = 32767.0) -> np.ndarray:
    """Float samples as int16, clipped at full scale (a value past it must not wrap around). 32767 is
    what TEN-VAD is fed (as AMELA scales); 32768 inverts reading 16-bit audio as float (x / 32768),
    so 16-bit samples come back exactly."""
    return np.clip(np.round(samples * full_scale), -32768, 32767).astype(np.int16)


class Backend:
    """A backend, loaded once per worker: ``stream()`` gives one file's state."""

    def __init__(self, name: str, threshold: float, hop: int = 256) -> None:
        if name not in BACKENDS:
            raise UsageError(f"--backend {name}: expected one of {', '.join(BACKENDS)}")
        self.name = name
        self.threshold = threshold
        if name == "silero":
            self.hop = SileroStream.FRAME
            self._session = _silero_session()
        else:
            if hop not in (160, 256, 512):
                raise UsageError(f"ten-vad hop {hop}: expected 160, 256 or 512 samples")
            self.hop = hop
            self._ten_vad = _ten_vad_class()

    def stream(self):
        if self.name == "silero":
            return SileroStream(self._session, self.threshold)
        return TenVadStream(lambda: self._ten_vad(hop_size=self.hop, threshold=self.threshold), self.hop)


def _missing(name: str, exc: BaseException) -> UsageError:
    note = " (TEN-VAD also needs Debian's libc++1: apt-get install libc++1)" if name == "ten-vad" else ""
    return UsageError(f"--backend {name} needs the extra audiomill[{EXTRAS[name]}] ({exc}): "
                      f"pip install 'audiomill[{EXTRAS[name]}]'{note}")


def silero_model_path() -> str:
    """The sequence ONNX model inside the silero-vad wheel, found without importing the package."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise _missing("silero", ModuleNotFoundError("No module named 'silero_vad'"))
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "silero_vad_16k_sequence.onnx")
    if not os.path.isfile(path):
        raise UsageError(f"silero-vad is installed, but without its sequence model ({path}): "
                         f"pip install 'silero-vad>=6.2'")
    return path


def _silero_session():
    path = silero_model_path()
    try:
        import onnxruntime
    except ImportError as exc:
        raise _missing("silero", exc) from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a worker per core: each runs one thread
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _ten_vad_class():
    try:
        from ten_vad import TenVad
    except (ImportError, OSError) as exc:  # OSError: libc++.so.1 is missing
        raise _missing("ten-vad", exc) from None
    return TenVad


# -- what is computed from the frames ------------------------------------------------------------

ENERGY_HOP = 160  # samples (10 ms) of each level :class:`Levels` keeps


class Levels:
    """A file's level (mean power) every 10 ms, kept as its windows stream by (2.9 MB for two hours)."""

    def __init__(self) -> None:
        self.pending = np.zeros(0, np.float32)
        self.parts: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        samples = np.concatenate([self.pending, samples]) if len(self.pending) else samples
        whole = len(samples) // ENERGY_HOP * ENERGY_HOP
        frames = samples[:whole].reshape(-1, ENERGY_HOP).astype(np.float64)
        self.parts.append(np.mean(frames * frames, axis=1))
        self.pending = samples[whole:].copy()

    def finish(self) -> np.ndarray:
        if len(self.pending):
            self.parts.append(np.array([np.mean(self.pending.astype(np.float64) ** 2)]))
            self.pending = np.zeros(0, np.float32)
        return np.concatenate(self.parts) if self.parts else np.zeros(0)


def refine_end(levels: np.ndarray, end: float, next_start: float, options: VadOptions) -> float:
    """Where speech really ends, before ``end`` (where the model let go of it): the end of the last
    10 ms within ``options.refine`` seconds before it that is ``options.above_pause`` dB louder than
    the pause (the quietest fifth of the levels from there to the next speech). A model's probability decays slowly into a noisy pause
    (silero's runs 0.2-0.4 s past the speech in noise at -40 dBFS); the level does not."""
    per_second = RATE / ENERGY_HOP
    first = max(0, int((end - options.refine) * per_second))
    # the pause's level: the quietest fifth from the search's start to the next speech (a late end
    # leaves most of the pause before it)
    around = levels[first : int(min(next_start, end + 1.0) * per_second)]
    if len(around) < 10 or options.refine <= 0:
        return end
    floor = float(np.quantile(around, 0.2))
    loud = max(floor * 10 ** (options.above_pause / 10), 1e-10)
    span = levels[first : int(end * per_second)]
    above = np.flatnonzero(span > loud)
    if len(above) == 0:
        return end
    return min(end, float(first + above[-1] + 1) / per_second)


def segments(probs: np.ndarray, hop: int, num_samples: int, options: VadOptions,
             levels: np.ndarray | None = None) -> list[list[float]]:
    """Speech segments ``[[start, end], ...]`` in seconds: speech begins at a frame at or above the
    threshold and ends at the first frame of a run of at least ``min_silence`` below the end
    threshold, brought back to where the level falls to the pause's (:func:`refine_end`, given
    the file's ``levels``); segments shorter than ``min_speech`` are dropped; each is padded by
    ``speech_pad`` (halfway, where two would overlap) within the file."""
    frame = hop / RATE
    min_silence = max(1, int(round(options.min_silence / frame)))
    found: list[list[int]] = []
    start = None
    quiet = 0  # frames below the end threshold since speech last held
    for index, prob in enumerate(probs):
        if start is None:
            if prob >= options.threshold:
                start, quiet = index, 0
            continue
        if prob < options.end_threshold:
            quiet += 1
            if quiet >= min_silence:
                found.append([start, index - quiet + 1])
                start = None
        else:
            quiet = 0
    if start is not None:
        found.append([start, len(probs) - quiet])
    duration = num_samples / RATE
    spans = [[a * frame, min(b * frame, duration)] for a, b in found]
    if levels is not None:
        for number, span in enumerate(spans):
            after = spans[number + 1][0] if number + 1 < len(spans) else duration
            span[1] = max(span[0], refine_end(levels, span[1], after, options))
    spans = [span for span in spans if span[1] - span[0] >= options.min_speech]
    pad = options.speech_pad
    for number, span in enumerate(spans):
        before = spans[number - 1][1] if number else 0.0
        after = spans[number + 1][0] if number + 1 < len(spans) else duration
        span[0] = max(span[0] - pad, (before + span[0]) / 2 if number else 0.0)
        span[1] = min(span[1] + pad, (span[1] + after) / 2 if number + 1 < len(spans) else duration)
    return [[round(a, 3), round(b, 3)] for a, b in spans]


def runs(flags: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Runs of speech and of non-speech frames, ``(start, end)`` each, leading and trailing silence included."""
    speech, silence = [], []
    if len(flags) == 0:
        return speech, silence
    edges = [0, *(np.flatnonzero(np.diff(flags.astype(np.int8))) + 1).tolist(), len(flags)]
    for start, end in zip(edges[:-1], edges[1:]):
        (speech if flags[start] else silence).append((start, end))
    return speech, silence


def amela_statistics(flags: np.ndarray, hop: int) -> dict[str, float]:
    """AMELA's statistics of one file, in seconds: over speech runs (``*-spoken``) and non-speech runs
    (``*-nospch``), 0.0 where there are none; ``spch-ratio``, the share of speech frames."""
    speech, silence = runs(flags)
    result: dict[str, float] = {}
    for label, spans in (("spoken", speech), ("nospch", silence)):
        lengths = np.array([(end - start) * hop / RATE for start, end in spans], np.float64)
        result[f"max-{label}"] = float(lengths.max()) if lengths.size else 0.0
        result[f"min-{label}"] = float(lengths.min()) if lengths.size else 0.0
        result[f"avg-{label}"] = float(lengths.mean()) if lengths.size else 0.0
    result["spch-ratio"] = float(flags.mean()) if len(flags) else 0.0
    return {key: round(value, 6) for key, value in result.items()}


def amela_splits(flags: np.ndarray, hop: int, target: float = 30.0, search: float = 10.0,
                 min_pause: float = 0.3) -> list[float]:
    """Where AMELA splits a long file, in seconds: from ``target`` on, look up to ``search`` seconds
    ahead for a pause of at least ``min_pause`` and split at its middle; the next target is that split
    plus ``target``; where none is found, move on ``search`` seconds. (Only files of 30 s or more
    are split: see :func:`amela_record`.)"""
    per_second = RATE / hop
    target_frames, search_frames = int(target * per_second), int(search * per_second)
    pause_frames = int(min_pause * per_second)
    total = len(flags)
    found: list[int] = []
    position = target_frames
    while position < total - target_frames:
        index, limit, split = position, min(position + search_frames, total), None
        while index < limit and split is None:
            if flags[index]:
                index += 1
                continue
            begin = index  # a pause: how long it lasts (it may run past the search window)
            while index < total and not flags[index]:
                index += 1
            if index - begin >= pause_frames:
                split = begin + (index - begin) // 2
        if split is None:
            position += search_frames
        else:
            found.append(split)
            position = split + target_frames
    return [round(frame * hop / RATE, 6) for frame in found]


def amela_record(flags: np.ndarray, hop: int, num_samples: int) -> dict:
    """``duration``, AMELA's statistics and ``splits`` (seconds; empty under 30 s) of one file."""
    duration = num_samples / RATE
    return {"duration": round(duration, 6), **amela_statistics(flags, hop),
            "splits": amela_splits(flags, hop) if duration >= 30.0 else []}


# -- segments of MIN to MAX seconds ---------------------------------------------------------------

def plan_segments(speech: list[list[float]], levels: np.ndarray, duration: float, shortest: float,
                  longest: float) -> list[tuple[float, float, str | None]]:
    """A file cut at its pauses into segments of ``shortest`` to ``longest`` seconds:
    ``(start, end, dropped)``, ``dropped`` the reason a segment is kept out (or None).

    Consecutive speech segments join while the whole stays within ``longest``; a stretch of
    speech longer than that is cut at its quietest 10 ms (leaving both parts at least
    ``shortest``), again until every part fits. A piece left shorter than ``shortest`` joins
    the one before if together they fit, else it is kept with the reason it is too short."""
    pieces: list[list[float]] = []
    for start, end in speech:
        for part in _cut_long(start, end, levels, shortest, longest):
            if pieces and part[1] - pieces[-1][0] <= longest:
                pieces[-1][1] = part[1]
            else:
                pieces.append(list(part))
    merged: list[list[float]] = []
    for piece in pieces:
        if piece[1] - piece[0] < shortest and merged and piece[1] - merged[-1][0] <= longest:
            merged[-1][1] = piece[1]
        else:
            merged.append(piece)
    if len(merged) > 1 and merged[0][1] - merged[0][0] < shortest and merged[1][1] - merged[0][0] <= longest:
        merged[1][0] = merged.pop(0)[0]  # a short first piece joins the second
    return [(round(a, 3), round(min(b, duration), 3),
             None if b - a >= shortest else f"shorter than {shortest:g} s") for a, b in merged]


def _cut_long(start: float, end: float, levels: np.ndarray, shortest: float, longest: float) -> list[tuple[float, float]]:
    if end - start <= longest:
        return [(start, end)]
    per_second = RATE / ENERGY_HOP
    low, high = start + shortest, end - shortest  # where a cut leaves both parts long enough
    if high <= low:
        low = high = (start + end) / 2
    first, last = int(low * per_second), max(int(low * per_second) + 1, int(high * per_second))
    span = levels[first:last]
    cut = (first + int(np.argmin(span))) / per_second if len(span) else (start + end) / 2
    cut = min(max(cut, start + 1e-3), end - 1e-3)
    return _cut_long(start, cut, levels, shortest, longest) + _cut_long(cut, end, levels, shortest, longest)
