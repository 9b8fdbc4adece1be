"""A stage that is a function of one whole file: ``records(item, samples) -> [record, ...]``.

For work that needs no batching: statistics, a model that takes one file at a time, or a
stage of one's own. The decoders hand over each file whole at ``sample_rate`` (``window``
is 0); :meth:`PerFileStage.records` returns its records, zero, one or several. An
exception there is the file's error record, unless the stage fails on every file from the
start (see :class:`~audiomill.stages.FailureGuard`).
"""

from __future__ import annotations

import dataclasses

from typing import Any

import numpy as np

from audiomill.chunking import Window
from audiomill.items import Item
from audiomill.stages import FailureGuard, FileOutput


class PerFileStage:
    name = "per-file"
    sample_rate = 16000
    window = 0
    overlap = 0
    alignment = 1
    fields: dict[str, str] = {}
    needs: tuple[str, ...] = ()  # packages it imports: a missing one refuses the run before it starts
    # without a declared Settings: the settings a later launch may change (they do not change records)
    runtime_settings: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.guard = FailureGuard(self.name)

    @classmethod
    def check(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Check the settings before the plan is frozen; returns those to keep: with a declared ``Settings``
        (see :mod:`audiomill.stages.settings`) every setting, its default where none is given; else as given."""
        declared = getattr(cls, "Settings", None)
        if dataclasses.is_dataclass(declared):
            return dataclasses.asdict(declared(**settings))
        return dict(settings)

    @classmethod
    def build(cls, settings: dict[str, Any], device: str) -> "PerFileStage":
        return cls(**settings)

    def records(self, item: Item, samples: np.ndarray) -> list[dict[str, Any]]:
        """The records of one file (``samples``: mono float32 at ``sample_rate``)."""
        raise NotImplementedError

    # -- the Stage protocol ----------------------------------------------------------------------

    def begin(self, ticket: int, item: Item) -> tuple[int, Item]:
        return ticket, item

    def add_window(self, state: tuple[int, Item], number: int, window: Window, samples: np.ndarray, last: bool,
                   num_samples: int = 0) -> list[FileOutput]:
        ticket, item = state
        try:
            records = self.records(item, samples)
        except Exception as exc:
            return self.guard.failed(FileOutput(ticket, item, error=f"{self.name} failed: {type(exc).__name__}: "
                                                                      f"{exc}"), exc)
        output = FileOutput(ticket, item, list(records), audio_seconds=len(samples) / self.sample_rate)
        return (self.guard.worked() if not self.guard.succeeded else []) + [output]

    def fail(self, state: tuple[int, Item], reason: str) -> list[FileOutput]:
        ticket, item = state
        return [FileOutput(ticket, item, error=reason)]

    def flush(self, end: bool = False) -> list[FileOutput]:
        return self.guard.release() if end else []

    def drain(self) -> list[FileOutput]:
        return []

    @property
    def waiting(self) -> bool:
        return False

    def close(self) -> None:
        pass
