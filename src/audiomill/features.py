"""Model inputs computed from a window in the decode processes, not on the thread that feeds the model.

Some codecs do not take samples: X-codec2 and MaskGCT's w2v-BERT take Kaldi filter banks,
normalised over each clip, that a transformers feature extractor computes on the CPU (about
16 ms per 10 s clip on one core). Done on the device thread, that caps a GPU at some 600x
real time however fast the model is. A stage that declares a ``featurizer`` (a picklable
callable, equal for equal settings: :class:`ExtractorFeatures`) has them computed by the
decoder that cut the window, per window, and receives :class:`Features` in place of samples.
It pads them into a batch (:func:`collate`) exactly as the extractor pads a batch of clips.

A window still comes as samples if its features failed in the decoder: the stage computes
them itself, so that a broken extractor fails the stage (its guard), not every file.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(eq=False)
class Features:
    """One window as the model's inputs: each array as the extractor gives it for this clip alone
    (batch axis first, of size 1). ``len()`` is the window's length in samples, which the
    batcher counts and the codec's frame arithmetic takes."""

    num_samples: int
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return self.num_samples


def collate(clips: list[Features], padding: tuple[tuple[str, int, float], ...]) -> dict[str, np.ndarray]:
    """The clips' arrays as one batch: each ``(name, axis, value)`` of ``padding`` padded along
    ``axis`` to the longest clip's with ``value``, then stacked along the batch axis."""
    batch: dict[str, np.ndarray] = {}
    for name, axis, value in padding:
        arrays = [clip.arrays[name] for clip in clips]
        longest = max(a.shape[axis] for a in arrays)
        padded = []
        for array in arrays:
            if array.shape[axis] < longest:
                widths = [(0, 0)] * array.ndim
                widths[axis] = (0, longest - array.shape[axis])
                array = np.pad(array, widths, constant_values=value)
            padded.append(array)
        batch[name] = np.concatenate(padded, axis=0)
    return batch


_extractors: dict[tuple[str, str, str], Any] = {}  # built once per process


@dataclass(frozen=True)
class ExtractorFeatures:
    """A transformers feature extractor on one clip, as a picklable, comparable value.

    ``padding``: the arrays a batch needs, with the axis each is padded along and the value
    the extractor pads it with. ``setup``: a module whose ``install()`` must run before the
    extractor's module is imported (audiomill's torchaudio stand-in)."""

    module: str
    name: str
    config: str  # the extractor's to_json_string()
    sample_rate: int
    padding: tuple[tuple[str, int, float], ...]
    setup: str = ""

    @classmethod
    def of(cls, extractor, padding: tuple[tuple[str, int, float], ...], setup: str = "") -> "ExtractorFeatures":
        return cls(type(extractor).__module__, type(extractor).__name__, extractor.to_json_string(),
                   int(extractor.sampling_rate), padding, setup)

    def extractor(self):
        key = (self.module, self.name, self.config)
        if key not in _extractors:
            if self.setup:
                importlib.import_module(self.setup).install()
            cls = getattr(importlib.import_module(self.module), self.name)
            _extractors[key] = cls.from_dict(json.loads(self.config))
        return _extractors[key]

    def __call__(self, samples: np.ndarray) -> dict[str, np.ndarray]:
        inputs = self.extractor()([samples], sampling_rate=self.sample_rate, return_tensors="np")
        return {name: np.ascontiguousarray(inputs[name]) for name, _, _ in self.padding}


def model_inputs(featurizer: ExtractorFeatures, wav, lengths) -> dict[str, Any]:
    """A padded batch of samples (``wav [B, T]``, ``lengths [B]``) as the model's inputs: each clip's
    features from its own samples only, then padded together (:func:`collate`), as CPU tensors."""
    import torch

    clips = [Features(n, featurizer(row[:n].numpy())) for row, n in zip(wav.cpu(), lengths.tolist())]
    return {name: torch.from_numpy(array) for name, array in collate(clips, featurizer.padding).items()}
