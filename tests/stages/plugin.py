"""A stage kind of a user's own package, registered through its entry points (``audiomill.stages``), with two
declared settings: ``scale`` changes what is written, ``log_every`` does not."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from audiomill.stages.perfile import PerFileStage
from audiomill.stages.settings import setting

log = logging.getLogger(__name__)


@dataclass
class LoudnessSettings:
    scale: float = setting(1.0, "each file's RMS level is written times this", minimum=0.0, metavar="X", shown=True)
    log_every: int = setting(0, "log a line every N files (0: never)", minimum=0, metavar="N", output=False)


class Loudness(PerFileStage):
    """Each file's RMS level, scaled: one record per file."""

    name = "loudness"
    label = "loudness"
    sample_rate = 16000
    fields = {"key": "string", "rms": "float64"}
    Settings = LoudnessSettings

    def __init__(self, scale: float = 1.0, log_every: int = 0) -> None:
        super().__init__()
        self.scale = scale
        self.log_every = log_every
        self.seen = 0

    def records(self, item, samples):
        self.seen += 1
        if self.log_every and self.seen % self.log_every == 0:
            log.info("loudness: %d files", self.seen)
        return [{"key": item.key, "rms": round(float(np.sqrt(np.mean(samples ** 2))) * self.scale, 6)}]
