"""Stages: what a run computes from each decoded file, behind one protocol.

A stage declares the audio it wants (``sample_rate``; ``window``, ``overlap`` and
``alignment`` in samples, ``window == 0`` for the whole file at once), the record fields
it writes with their types (``fields``, see :data:`audiomill.sinks.FIELD_TYPES`) and the
packages it needs. The runner hands it each file's windows as the decoders cut them
(:meth:`Stage.add_window`), and the stage returns :class:`FileOutput`\\ s when it has them:
zero, one or several records per file (a file with no speech may have none), or an
error. A record's ``key`` is its file's key; a stage writing several records per file
either tells them apart with a field of its own, or gives each a key of its own and names
the field holding the file's (``file_key``: vad's segments, ``source_key``). A stage may give
files with its records too (``members``), written as a tar per shard in WebDataset's layout.

Stage kinds register by name (``tokenize``); ``module:Class`` names any importable class
that follows the protocol, for stages of one's own. Two bases carry what stages share:
:class:`audiomill.stages.batched.BatchedModelStage` (batches by duration, OOM halving, the
encoding thread, precision, compile) and :class:`audiomill.stages.perfile.PerFileStage`
(a function of one whole file).
"""

from __future__ import annotations

import importlib
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from audiomill.chunking import Window
from audiomill.errors import StageBroken, UsageError
from audiomill.items import Item

log = logging.getLogger(__name__)

KINDS = {"tokenize": "audiomill.stages.tokenize:TokenizeStage", "vad": "audiomill.stages.vad:VadStage",
         "transcribe": "audiomill.stages.transcribe:TranscribeStage", "text": "audiomill.stages.text:TextStage",
         "indextts": "audiomill.stages.tts:TtsStage"}
ENTRY_POINTS = "audiomill.stages"  # installed packages register kinds of their own here: name = "module:Class"


def plugin_kinds() -> dict[str, str]:
    """The kinds installed packages register (entry points of the group ``audiomill.stages``)."""
    from importlib.metadata import entry_points

    return {point.name: point.value for point in entry_points(group=ENTRY_POINTS) if point.name not in KINDS}


def kinds() -> dict[str, str]:
    """Every registered kind: audiomill's own, then those of installed packages."""
    return {**KINDS, **plugin_kinds()}


@dataclass
class FileOutput:
    """What a stage made of one file: its records (zero or more), or why it failed."""

    ticket: int
    item: Item
    records: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    audio_seconds: float = 0.0
    # files to go with the records, each (record key, extension, bytes), for a stage whose ``members``
    # names the folder of its tars (see audiomill.sinks.journal)
    members: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def record(self) -> dict[str, Any] | None:
        """The one record of a stage that writes one per file."""
        return self.records[0] if self.records else None


class Stage(Protocol):
    """A stage instance; its class (the stage *kind*) also has ``check(settings) -> settings`` (run when
    the plan is made: everything a worker will need, checked on this machine), ``build(settings, device)``
    ``needs``, the packages it imports (checked before ``check``), and ``Settings``, its declared settings (see
    :mod:`audiomill.stages.settings`: those with ``output=False``, such as tokenize's batch size, a later
    launch on the same output may change; a kind without a declaration names them in ``runtime_settings``)."""

    name: str  # for logs and errors
    sample_rate: int
    window: int  # samples per window of a long file (0: the whole file in one)
    overlap: int
    alignment: int  # window starts are multiples of this
    fields: dict[str, str]  # record fields and their types
    # optional: ``members``, a folder name: the files of FileOutput.members go into <members>/<shard>.tar;
    # ``file_key``, the record field holding the file's key where ``key`` is each record's own (several
    # records per file)
    # optional: ``featurizer``, a picklable callable the decoders run on each window (samples -> the
    # model's inputs, see audiomill.features); its windows then come as Features

    def begin(self, ticket: int, item: Item) -> Any:
        """A file's state: passed back with each of its windows."""

    def add_window(self, state: Any, number: int, window: Window, samples: np.ndarray, last: bool,
                   num_samples: int = 0) -> list[FileOutput]:
        """One window of a file (``num_samples``, the file's length, comes with the last)."""

    def fail(self, state: Any, reason: str) -> list[FileOutput]:
        """The file cannot be used (it did not decode): its error output, once."""

    def flush(self, end: bool = False) -> list[FileOutput]:
        """Process what waits for a batch to fill. ``end``: no more input will come for now, so
        everything; otherwise a stage may return after part of it (what is done is written first)
        and is called again while :attr:`waiting`."""

    def drain(self) -> list[FileOutput]:
        """What is already computed (stopping early: the rest stays undone)."""

    @property
    def waiting(self) -> bool:
        """Windows wait for their batch, or computed windows for their outputs."""

    def close(self) -> None:
        """Free the model and any thread."""


def stage_class(kind: str) -> type:
    """The class of a stage kind: a registered name, or ``module:Class``."""
    known = KINDS if kind in KINDS or ":" in kind else kinds()
    target = known.get(kind, kind)
    if ":" not in target:
        raise UsageError(f"unknown stage kind {kind!r}; known: {', '.join(known)}, or module:Class for your own")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"stage kind {kind!r}: cannot import {module_name}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None or not hasattr(cls, "check") or not hasattr(cls, "build"):
        raise UsageError(f"stage kind {kind!r}: {module_name} has no stage class {attr} (with check and build)")
    return cls


def with_meta(record: dict[str, Any], item: Item, reserved: set[str]) -> dict[str, Any]:
    """``record`` followed by the item's metadata; clashing fields go under ``"meta"``."""
    reserved = reserved | set(record) | {"meta"}
    record.update((k, v) for k, v in item.meta.items() if k not in reserved)
    clashes = {k: v for k, v in item.meta.items() if k in reserved}
    if clashes:
        record["meta"] = clashes
    return record


class FailureGuard:
    """Tells files a model rejects from a stage that is broken.

    Until a stage has succeeded on one file, the files it fails on are held back. If
    ``limit`` files fail before any succeeds, the failures are not the files' fault (a
    bug, a shape mismatch, a missing package): :class:`StageBroken` stops the run with
    the first traceback, and no error record is written for them. Once the stage has
    worked, or when no more input comes, held failures become error records.
    """

    def __init__(self, stage: str, limit: int = 3) -> None:
        self.stage = stage
        self.limit = limit
        self.succeeded = False
        self.held: list[FileOutput] = []
        self._first: str | None = None

    def failed(self, output: FileOutput, exc: BaseException | None = None) -> list[FileOutput]:
        if self.succeeded or exc is None:
            return [output]
        self.held.append(output)
        if self._first is None:
            self._first = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if len(self.held) >= self.limit:
            raise StageBroken(f"stage {self.stage} failed on each of the first {len(self.held)} files it was given "
                              f"and on none succeeded, so the fault is the stage's, not the files'. The first "
                              f"failure:\n{self._first}")
        return []

    def worked(self) -> list[FileOutput]:
        """The stage succeeded on a file: what was held back was the files' fault after all."""
        self.succeeded = True
        return self.release()

    def release(self) -> list[FileOutput]:
        held, self.held = self.held, []
        return held
