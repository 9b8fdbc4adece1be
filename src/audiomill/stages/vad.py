"""The vad stage: 16 kHz windows in, one record per file of its speech segments and AMELA's statistics.

Each file's windows go through the backend as they come (its state kept per file, so a long
file is never whole in memory); its last window gives the record::

    {"key", "tar_file", "audio_file", "backend", "duration", "speech_segments": [[start, end], ...],
     "max-spoken", "min-spoken", "avg-spoken", "max-nospch", "min-nospch", "avg-nospch",
     "spch-ratio", "splits", <metadata>}

all in seconds (see :mod:`audiomill.vad`). VAD has no GPU part: a run of it uses CPU workers.

With ``segment`` the file gives a record per segment instead (``key`` ``<file key>-NNNN``, its
file's key in ``source_key``, ``offset`` and ``duration``); with ``write_audio`` too, each segment
that is not dropped is also a FLAC (or WAV) of its 16 kHz samples, 16-bit, clipped, with its record
as JSON beside it, in ``audio/<shard>.tar`` (WebDataset's layout, see
:mod:`audiomill.sinks.journal`). The file's samples are then kept as it streams through
(int16: 115 MB an hour of audio), since its cuts are known only at its end.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiomill.chunking import Window
from audiomill.files import write_atomic
from audiomill.errors import UsageError
from audiomill.items import Item
from audiomill.sinks.journal import dumps
from audiomill.stages import FileOutput, with_meta
from audiomill.stages.perfile import PerFileStage
from audiomill.stages.settings import from_table, setting
from audiomill.vad import (BACKENDS, RATE, Backend, Levels, VadOptions, amela_record, amela_statistics,
                           plan_segments, segments, to_int16)

WINDOW = 1024 * 512  # samples a window: a whole number of frames for every backend (32.8 s)
STATISTICS = ("max-spoken", "min-spoken", "avg-spoken", "max-nospch", "min-nospch", "avg-nospch", "spch-ratio")
FIELDS = {"key": "string", "tar_file": "string", "audio_file": "string", "backend": "string",
          "duration": "float64", "speech_segments": "list<list<float64>>",
          **{name: "float64" for name in STATISTICS}, "splits": "list<float64>", "dropped": "string"}
SEGMENT_FIELDS = {**FIELDS, "source_key": "string", "offset": "float64"}
AUDIO_FORMATS = {"flac": "FLAC", "wav": "WAV"}  # --write-audio: extension -> soundfile's format
AUDIO_FOLDER = "audio"


def _hop(value: Any) -> int:
    if isinstance(value, bool) or str(value) not in ("160", "256", "512"):
        raise UsageError(f"--hop {value}: expected one of 160, 256, 512")
    return int(value)


@dataclass
class VadSettings:
    """A vad stage's settings: the flags of ``audiomill vad``."""

    backend: str = setting("silero", "silero (silero-vad's ONNX model, audiomill[vad]) or ten-vad "
                                     "(audiomill[ten-vad], needs Debian's libc++1; its licence has extra "
                                     "conditions, see the README)", choices=BACKENDS, shown=True)
    threshold: float = setting(VadOptions.threshold, "speech probability at which speech starts", positive=True,
                               metavar="P")
    neg_threshold: float | None = setting(None, "probability below which speech may end (default: threshold - "
                                                "0.15)", positive=True, metavar="P")
    min_speech: float = setting(VadOptions.min_speech, "shorter speech segments are dropped", minimum=0.0,
                                metavar="S")
    min_silence: float = setting(VadOptions.min_silence, "shorter pauses do not end a segment", minimum=0.0,
                                 metavar="S")
    speech_pad: float = setting(VadOptions.speech_pad, "seconds added before and after each segment (halfway, "
                                                       "where two would meet)", minimum=0.0, metavar="S")
    hop: int = setting(256, "ten-vad: samples per frame at 16 kHz (silero's frames are 512)",
                       choices=("160", "256", "512"), parse=lambda value: _hop(value))
    segment: str | None = setting(
        None, "a record per segment of MIN to MAX seconds instead of per file, cut at pauses (a stretch of speech "
              "longer than MAX at its quietest point), with offset and duration: the manifest then lists "
              "segments, which tokenize reads without re-encoding audio", metavar="MIN:MAX")
    min_speech_ratio: float = setting(
        0.0, "files (segments) with a smaller share of speech frames are marked dropped, with the reason; they "
             "stay in the records and the CSV, not in the manifest", minimum=0.0, metavar="SHARE")
    min_duration: float = setting(0.0, "shorter files (segments) are marked dropped", minimum=0.0, metavar="S")
    max_duration: float = setting(0.0, "longer files (segments) are marked dropped (0: no limit)", minimum=0.0,
                                  metavar="S")
    write_audio: str | None = setting(
        None, "with --segment: each segment not dropped also as a file (flac or wav: 16 kHz mono, 16-bit) with "
              "its record as JSON, in <out>/audio/<shard>.tar, WebDataset's layout", metavar="FORMAT",
        parse=lambda value: None if value in (None, "") else str(value).lower())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VadSettings":
        cfg = cls(**from_table(cls, data, "vad"))
        if cfg.backend not in BACKENDS:
            raise UsageError(f"--backend {cfg.backend}: expected one of {', '.join(BACKENDS)}")
        for name in ("threshold", "neg_threshold"):
            value = getattr(cfg, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 < value < 1.0):
                raise UsageError(f"--{name.replace('_', '-')} {value!r}: expected a probability between 0 and 1")
        cfg.segment_range()  # checked now
        if cfg.write_audio not in (None, ""):
            cfg.write_audio = str(cfg.write_audio).lower()
            if cfg.write_audio not in AUDIO_FORMATS:
                raise UsageError(f"--write-audio {cfg.write_audio}: expected one of {', '.join(AUDIO_FORMATS)}")
            if cfg.segment_range() is None:
                raise UsageError("--write-audio writes segments: give --segment MIN:MAX too")
        else:
            cfg.write_audio = None
        for name in ("min_speech", "min_silence", "speech_pad", "min_speech_ratio", "min_duration", "max_duration"):
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UsageError(f"--{name.replace('_', '-')} {value!r}: expected seconds >= 0")
        return cfg

    def segment_range(self) -> tuple[float, float] | None:
        if self.segment in (None, ""):
            return None
        low, sep, high = str(self.segment).partition(":")
        try:
            shortest, longest = float(low), float(high)
        except ValueError:
            shortest = longest = -1.0
        if not sep or not 0 <= shortest < longest:
            raise UsageError(f"--segment {self.segment}: expected MIN:MAX in seconds, MIN < MAX, e.g. 3:30")
        return shortest, longest

    def dropped(self, duration: float, ratio: float) -> str | None:
        """Why a file (or segment) of this length and speech share is left out, if it is."""
        if ratio < self.min_speech_ratio:
            return f"speech ratio {ratio:.3f} under --min-speech-ratio {self.min_speech_ratio:g}"
        if duration < self.min_duration:
            return f"{duration:.2f} s, under --min-duration {self.min_duration:g}"
        if self.max_duration and duration > self.max_duration:
            return f"{duration:.2f} s, over --max-duration {self.max_duration:g}"
        return None

    def options(self) -> VadOptions:
        return VadOptions(self.threshold, self.neg_threshold, self.min_speech, self.min_silence, self.speech_pad)


class SharedStream:
    """One file's backend stream and levels, shared by the stages of a worker that run one backend's
    settings over the same windows of the same file: a vad stage and the transcribe stage after it,
    whose own VAD would otherwise compute every window again. Each window is pushed once, by whichever
    stage gets it first; ``finish`` is computed once."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.levels = Levels()
        self.windows: list[Window] = []
        self.error: BaseException | None = None
        self.result: tuple | None = None

    def push(self, number: int, window: Window, samples: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        if number < len(self.windows):
            if self.windows[number] != window:
                raise RuntimeError(f"window {number} is {window}, where the stage sharing this file's VAD had "
                                   f"{self.windows[number]}")
            return
        if number != len(self.windows):
            raise RuntimeError(f"window {number} came where window {len(self.windows)} was due")
        try:
            self.stream.push(samples)
            self.levels.push(samples)
        except Exception as exc:
            self.error = exc
            raise
        self.windows.append(window)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, flags, levels) of the whole file."""
        if self.error is not None:
            raise self.error
        if self.result is None:
            self.result = (*self.stream.finish(), self.levels.finish())
        return self.result


# A file's shared stream while a stage's state holds it: keyed by the file's Item (the same object
# for every stage of a worker, kept alive by those states) and the backend's settings.
_STREAMS: "weakref.WeakValueDictionary[tuple, SharedStream]" = weakref.WeakValueDictionary()


@dataclass
class _File:
    ticket: int
    item: Item
    stream: SharedStream
    next: int = 0  # the window expected next
    done: bool = False
    audio: list[np.ndarray] | None = None  # the int16 samples so far, when segments are written as files


class VadStage(PerFileStage):
    """A VAD backend behind the Stage protocol, fed window by window (flush, drain and close as a
    :class:`~audiomill.stages.perfile.PerFileStage`'s)."""

    name = "vad"
    sample_rate = RATE
    window = WINDOW
    overlap = 0
    fields = FIELDS
    needs: tuple[str, ...] = ()
    Settings = VadSettings
    label = "voice activity"  # the dataset card's words for its records
    cpu_only = True  # no GPU part: its workers are CPU workers
    summary_files = ("vad.csv", "manifest.jsonl")  # what after_run writes beside the shards (push uploads them)

    @classmethod
    def check(cls, settings: dict[str, Any]) -> dict[str, Any]:
        cfg = VadSettings.from_dict(settings)
        Backend(cfg.backend, cfg.threshold, cfg.hop)  # the extra is installed, the model loads: now, not on a node
        return dataclasses.asdict(cfg)

    @classmethod
    def build(cls, settings: dict[str, Any], device: str) -> "VadStage":
        return cls(VadSettings.from_dict(settings))

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self.backend = Backend(settings.backend, settings.threshold, settings.hop)
        self.alignment = self.backend.hop
        self.options = settings.options()
        self.segments = settings.segment_range()
        self.fields = SEGMENT_FIELDS if self.segments else FIELDS
        self.file_key = "source_key" if self.segments else "key"
        self.members = AUDIO_FOLDER if settings.write_audio else None
        super().__init__()

    @classmethod
    def after_run(cls, folder, group: str) -> None:
        """Once a run ends: ``vad.csv`` and ``manifest.jsonl`` from its complete shards (:func:`write_reports`)."""
        write_reports(folder, group)

    def begin(self, ticket: int, item: Item) -> _File:
        key = (id(item), ticket, self.backend.name, self.backend.threshold, self.backend.hop)
        stream = _STREAMS.get(key)
        if stream is None:
            stream = _STREAMS[key] = SharedStream(self.backend.stream())
        return _File(ticket, item, stream, audio=[] if self.members else None)

    def add_window(self, state: _File, number: int, window: Window, samples: np.ndarray, last: bool,
                   num_samples: int = 0) -> list[FileOutput]:
        if state.done:
            return []
        try:
            if number != state.next:
                raise RuntimeError(f"window {number} came where window {state.next} was due")
            state.next += 1
            state.stream.push(number, window, samples)
            if state.audio is not None:
                state.audio.append(to_int16(samples, 32768.0))  # a 16-bit 16 kHz source: its own samples
            if not last:
                return []
            state.done = True
            records = self.records(state.item, *state.stream.finish(), num_samples)
            members = self.audio_members(records, state.audio) if state.audio is not None else []
        except Exception as exc:
            state.done = True
            state.audio = None
            return self.guard.failed(FileOutput(state.ticket, state.item, error=f"vad failed: {type(exc).__name__}: "
                                                                                  f"{exc}"), exc)
        state.audio = None
        output = FileOutput(state.ticket, state.item, records, audio_seconds=num_samples / RATE, members=members)
        return (self.guard.worked() if not self.guard.succeeded else []) + [output]

    def records(self, item: Item, probs: np.ndarray, flags: np.ndarray, levels: np.ndarray,
                num_samples: int) -> list[dict[str, Any]]:
        """The file's record; with ``--segment``, one record per segment instead."""
        hop = self.backend.hop
        speech = segments(probs, hop, num_samples, self.options, levels)
        head = {"key": item.key, "tar_file": item.source, "audio_file": item.audio_file, "backend": self.backend.name}
        if self.segments is None:
            record = {**head, **amela_record(flags, hop, num_samples), "speech_segments": speech}
            record["dropped"] = self.settings.dropped(record["duration"], record["spch-ratio"])
            return [with_meta(record, item, set(self.fields) | {"error"})]
        records = []
        cuts = plan_segments(speech, levels, num_samples / RATE, *self.segments)
        if not cuts:  # no speech at all: the file is still written down, as dropped
            cuts = [(0.0, round(num_samples / RATE, 3), "no speech")]
        for number, (start, end, short) in enumerate(cuts):
            frames = flags[int(round(start * RATE / hop)) : int(round(end * RATE / hop))]
            stats = amela_statistics(frames, hop)
            inside = [[max(a, start), min(b, end)] for a, b in speech if b > start and a < end]
            record = {**head, "key": f"{item.key}-{number:04d}", "source_key": item.key, "offset": start,
                      "duration": round(end - start, 6), **stats, "splits": [], "speech_segments": inside,
                      "dropped": short or self.settings.dropped(end - start, stats["spch-ratio"])}
            records.append(with_meta(record, item, set(self.fields) | {"error"}))
        return records

    def audio_members(self, records: list[dict[str, Any]], chunks: list[np.ndarray]) -> list[tuple[str, str, bytes]]:
        """Each kept segment's audio file and its record as JSON (record key, extension, bytes)."""
        import soundfile

        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        kind = self.settings.write_audio or "flac"
        members = []
        for record in records:
            if record.get("dropped"):
                continue
            start = int(round(record["offset"] * RATE))
            cut = samples[start : start + int(round(record["duration"] * RATE))]
            buffer = io.BytesIO()
            soundfile.write(buffer, cut, RATE, format=AUDIO_FORMATS[kind], subtype="PCM_16")
            members += [(record["key"], kind, buffer.getvalue()),
                        (record["key"], "json", dumps({**record, "sample_rate": RATE}))]
        return members

    def fail(self, state: _File, reason: str) -> list[FileOutput]:
        if state.done:
            return []
        state.done = True
        state.audio = None
        return [FileOutput(state.ticket, state.item, error=reason)]



# -- the run's reports: vad.csv and manifest.jsonl -------------------------------------------------

CSV_COLUMNS = ("audio_filepath", "duration", *STATISTICS, "splits", "error", "dropped")
MANIFEST = "manifest.jsonl"
CSV = "vad.csv"


def audio_filepath(tar_file: str, audio_file: str) -> str:
    """Where a record's audio is, absolute: a file of a folder or manifest, or ``ARCHIVE#MEMBER``."""
    if os.path.isabs(audio_file):
        return audio_file
    if os.path.isdir(tar_file):
        return os.path.abspath(os.path.join(tar_file, audio_file))
    if tar_file.endswith((".jsonl", ".json", ".txt")):  # a manifest: relative to its folder
        return os.path.abspath(os.path.join(os.path.dirname(tar_file), audio_file))
    return f"{os.path.abspath(tar_file)}#{audio_file}"


def write_reports(folder, group: str) -> tuple[str, str]:
    """``vad.csv`` and ``manifest.jsonl`` in the group's folder, from every complete shard, in the plan's
    order, each written whole and renamed into place (so a rerun that adds shards rebuilds them).

    A row per file (per segment, with ``--segment``: then ``offset`` too); the manifest has the
    files (segments) that are neither errors nor dropped, with their ``key``."""
    import csv

    where = folder.group_dir(group)
    settings = folder.plan().settings(group)
    segmented = bool(settings.get("segment"))
    columns = CSV_COLUMNS + (("offset",) if segmented else ())
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(columns)
    manifest: list[str] = []
    for record in folder.complete_records(group):
        path = audio_filepath(record.get("tar_file") or "", record.get("audio_file") or record.get("key", ""))
        if record.get("error") is not None:
            writer.writerow([path] + [""] * (len(CSV_COLUMNS) - 3) + [record["error"], ""]
                            + ([""] if segmented else []))
            continue
        splits = " ".join(f"{s:g}" for s in record.get("splits") or [])
        writer.writerow([path, record["duration"], *(record[name] for name in STATISTICS), splits, "",
                         record.get("dropped") or ""] + ([record["offset"]] if segmented else []))
        if record.get("dropped"):
            continue
        line = {"audio_filepath": path, "key": record["key"]}
        if segmented:
            line["offset"] = record["offset"]
        line.update({"duration": record["duration"], **{name: record[name] for name in STATISTICS}})
        if not segmented:
            line["splits"] = record["splits"]
        manifest.append(json.dumps(line, ensure_ascii=False))
    csv_path, manifest_path = os.path.join(where, CSV), os.path.join(where, MANIFEST)
    write_atomic(csv_path, table.getvalue(), clear_left=True)
    write_atomic(manifest_path, "".join(line + "\n" for line in manifest), clear_left=True)
    return csv_path, manifest_path
