"""Stages of a user's own (``kind = "tests.stages.toy:Thirds"``), to run the real runner with.

They compute real things from the decoded audio, so their records can be checked."""

from __future__ import annotations

import time

import numpy as np

from audiomill.stages.batched import BatchedModelStage
from audiomill.stages.perfile import PerFileStage


class Thirds(PerFileStage):
    """Three records per file: each third's span and RMS level."""

    name = "thirds"
    sample_rate = 16000
    fields = {"key": "string", "segment": "int64", "start": "float64", "end": "float64", "rms": "float64"}

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    def records(self, item, samples):
        time.sleep(self.delay)  # slow enough to be killed in the middle
        bounds = np.linspace(0, len(samples), 4).astype(int)
        return [{"key": item.key, "segment": i, "start": bounds[i] / self.sample_rate,
                 "end": bounds[i + 1] / self.sample_rate,
                 "rms": round(float(np.sqrt(np.mean(samples[bounds[i]:bounds[i + 1]] ** 2))), 6)}
                for i in range(3)]


class LongOnly(PerFileStage):
    """A record only for files longer than ``seconds``; none for the others."""

    name = "long-only"
    sample_rate = 8000
    fields = {"key": "string", "seconds": "float64"}

    def __init__(self, seconds: float = 3.0, delay: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.delay = delay

    def records(self, item, samples):
        time.sleep(self.delay)
        length = len(samples) / self.sample_rate
        return [{"key": item.key, "seconds": length}] if length > self.seconds else []


class Broken(BatchedModelStage):
    """A model stage whose own code is wrong: it raises TypeError on every batch."""

    name = "broken"
    fields = {"key": "string"}

    @classmethod
    def check(cls, settings):
        return dict(settings)

    @classmethod
    def build(cls, settings, device):
        return cls(16000, 1, 0.0, 0.0, 10.0, device)

    def model(self, tensor, lengths):
        return tensor + "a string"  # TypeError, as a real bug would raise


class NeedsMissing(Thirds):
    """A stage whose package is not installed here."""

    needs = ("audiomill_no_such_package",)
