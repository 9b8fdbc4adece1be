"""The transcribe stage: 16 kHz audio in, a transcript per file (or per speech segment) out.

Each record keeps the input's other fields and adds::

    {"key", "tar_file", "audio_file", "backend", "offset", "duration", "text", "language",
     "confidence", "no_speech_prob", "flags": [...], "dropped", <metadata>}

``offset`` and ``duration`` (seconds) place the clip in its audio file. ``flags`` lists the signs of
a hallucinated text (:func:`audiomill.asr.flags`); with ``drop_flagged`` a flagged record keeps
its place but its text is emptied and ``dropped`` says why.

Segments. When a vad stage runs earlier in the pipeline, this stage is given its settings
(``vad``) and runs the same VAD on the same windows, so it cuts exactly the segments that stage
writes: with its ``segment`` setting, a record per segment (the same ``key`` ``<file>-NNNN``,
``source_key``, ``offset``, ``duration``; dropped segments are not transcribed); without it, a
record per speech segment. Only speech is transcribed, never a pause. An input that already is
segments (a manifest with ``offset``/``duration``, as vad's) is transcribed as it comes.

A record that already has a ``text`` (an input manifest's) is passed through untouched, unless
``overwrite_text``. ``after_run`` writes ``manifest.jsonl`` (NeMo's fields: ``audio_filepath``,
``duration``, ``text``, ``offset`` for a segment) from the complete shards.

Batching is the shared :class:`~audiomill.stages.batched.BatchedModelStage`'s, over clips rather than
windows: a clip is never cut (a transcript is not the join of its parts' transcripts).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiomill import asr
from audiomill.batching import MAX_PADDING, Piece
from audiomill.chunking import Window
from audiomill.errors import UsageError
from audiomill.items import Item
from audiomill.stages import FileOutput, with_meta
from audiomill.stages.batched import PRECISIONS, BatchedModelStage, FileState
from audiomill.stages.budget import CPU_BATCH_SECONDS
from audiomill.stages.settings import from_table, setting
from audiomill.files import write_atomic
from audiomill.stages.vad import WINDOW, VadSettings, VadStage, audio_filepath

RATE = asr.RATE
# Whisper pads every clip to 30 s: a batch costs 30 s of audio a clip, whatever the clips' lengths, and
# padding costs nothing more. Its default budgets are in clips of 30 s.
WHISPER_BATCH_SECONDS = {"cpu": 8 * 30.0, "cuda": 32 * 30.0}
FIELDS = {"key": "string", "tar_file": "string", "audio_file": "string", "backend": "string", "offset": "float64",
          "duration": "float64", "text": "string", "language": "string", "confidence": "float64",
          "no_speech_prob": "float64", "flags": "list<string>", "dropped": "string"}
SEGMENT_FIELDS = {**FIELDS, "source_key": "string"}
MANIFEST = "manifest.jsonl"


@dataclass
class TranscribeSettings:
    """A transcribe stage's settings: the flags of ``audiomill transcribe``."""

    backend: str = setting(
        "whisper", "whisper (transformers' Whisper, audiomill[asr]; its weights from --model-path), faster-whisper "
                   "(a CTranslate2 conversion, audiomill[faster-whisper]) or pocketsphinx (audiomill[pocketsphinx]: "
                   "English, its model in the wheel, nothing to download)", choices=asr.BACKENDS)
    model_path: str | None = setting(
        None, "whisper: a transformers Whisper checkpoint (config.json, model.safetensors, the tokenizer and "
              "preprocessor_config.json); faster-whisper: its CTranslate2 conversion (model.bin, config.json, "
              "tokenizer.json); pocketsphinx: a model folder (acoustic model, .dict, optional LM) instead of the "
              "wheel's English one", metavar="DIR")
    language: str | None = setting(None, "whisper: the language of every clip (default: detected per clip)",
                                   metavar="CODE")
    task: str = setting(asr.TASKS[0], "whisper: transcribe, or translate into English", choices=asr.TASKS)
    grammar: str | None = setting(None, "pocketsphinx: a JSGF grammar of what may be said (exact text for "
                                        "constrained corpora)", metavar="FILE.jsgf")
    max_tokens_per_second: float = setting(
        asr.MAX_TOKENS_PER_SECOND, "whisper: a clip's text ends after N tokens per second of it (+ 8), so that a looping decoder stops",
        positive=True, metavar="N")
    batch_seconds: float = setting(
        0.0, "audio per model call, each whisper clip counted as 30 s (0: whisper 240 s on CPU, 960 s on a GPU; "
             "the others 10 s); halved on out of memory", minimum=0.0, metavar="S", output=False)
    max_padding: float = setting(
        MAX_PADDING, "padding a batch may hold, a share of its clips' own samples (not whisper's: it pads every clip to "
             "30 s)", minimum=0.0, metavar="SHARE", output=False)
    precision: str = setting(PRECISIONS[0], "whisper on a GPU: the model's precision", choices=PRECISIONS)
    overwrite_text: bool = setting(False, "transcribe input rows that already have a text too (default: pass "
                                          "them through)")
    drop_flagged: bool = setting(False, "empty the text of a record with a hallucination flag, its reason in "
                                        "'dropped'")
    max_chars_per_second: float = setting(
        25.0, "a longer text (for its clip's duration, at least 1 s) is flagged 'too long'", minimum=0.0,
        metavar="N")
    no_speech_threshold: float = setting(0.6, "whisper: a higher no-speech probability is flagged", minimum=0.0,
                                         metavar="P")
    vad: dict[str, Any] | None = setting(None, hidden=True)  # an earlier vad stage's settings: its segments
    weights: str | None = setting(None, hidden=True)  # resolved when the plan is made

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TranscribeSettings":
        cfg = cls(**from_table(cls, data, "transcribe"))
        if cfg.grammar and cfg.backend != "pocketsphinx":
            raise UsageError("--grammar is pocketsphinx's: a JSGF grammar of what is said")
        return cfg


_checked: dict[str, Any] = {}


def _cache_key(settings: dict[str, Any]) -> str:
    return json.dumps([settings.get(k) for k in ("backend", "weights", "language", "task", "grammar",
                                                 "max_tokens_per_second")], default=str)


class TranscribeStage(BatchedModelStage):
    """An ASR backend behind the batched-model machinery; a record per file or per speech segment."""

    Settings = TranscribeSettings
    cuttable = False
    summary_files = (MANIFEST,)

    @classmethod
    def check(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Check the settings and load the backend once on CPU (now, not on a node); the settings to keep."""
        from audiomill.codecs import WeightsNotFound, find_weights

        cfg = TranscribeSettings.from_dict(settings)
        if cfg.vad is not None:
            vad = VadSettings.from_dict(dict(cfg.vad))
            VadStage.check(dataclasses.asdict(vad))
            cfg.vad = dataclasses.asdict(vad)
        if cfg.grammar:
            cfg.grammar = os.path.abspath(cfg.grammar)
            if not os.path.isfile(cfg.grammar):
                raise UsageError(f"--grammar {cfg.grammar}: no such file")
        if cfg.model_path:
            cfg.model_path = os.path.abspath(cfg.model_path)
        if cfg.backend == "faster-whisper":
            try:
                cfg.weights = find_weights("faster-whisper", (("model.bin",), ("config.json",), ("tokenizer.json",)),
                                           None, cfg.model_path, random_hint=False)
            except WeightsNotFound as exc:
                raise UsageError(str(exc)) from None
        elif cfg.backend == "whisper":
            try:
                cfg.weights = find_weights("whisper", (("config.json",), ("model.safetensors", "pytorch_model.bin",
                                                                         "model.safetensors.index.json"),
                                                       ("preprocessor_config.json",)), None, cfg.model_path,
                                          random_hint=False)
            except WeightsNotFound as exc:
                raise UsageError(str(exc)) from None
        else:
            cfg.weights = cfg.model_path
        try:
            backend = asr.load_backend(cfg.backend, cfg.weights, "cpu", "fp32", cfg.language, cfg.task, cfg.grammar,
                                       cfg.max_tokens_per_second)
        except asr.BackendError as exc:
            raise UsageError(str(exc)) from None
        except ImportError as exc:
            raise UsageError(f"{cfg.backend} needs the extra audiomill[asr] ({exc})") from None
        except Exception as exc:  # a damaged checkpoint
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UsageError(f"{cfg.backend}: cannot load {cfg.weights}: {type(exc).__name__}: {reason}") from None
        kept = dataclasses.asdict(cfg)
        _checked[_cache_key(kept)] = backend
        return kept

    @classmethod
    def link(cls, settings: dict[str, Any], earlier: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        """In a pipeline, a transcribe stage after a vad stage transcribes that stage's segments."""
        vads = [stage_settings for kind, stage_settings in earlier if kind == "vad"]
        if "vad" not in settings and vads:
            return {**settings, "vad": dict(vads[-1])}
        return settings

    @classmethod
    def build(cls, settings: dict[str, Any], device: str) -> "TranscribeStage":
        cfg = TranscribeSettings.from_dict(settings)
        if not asr.backend_class(cfg.backend).gpu:
            device = "cpu"
        backend = _checked.pop(_cache_key(settings), None) if device == "cpu" else None
        backend = backend or asr.load_backend(cfg.backend, cfg.weights, device, cfg.precision, cfg.language, cfg.task,
                                              cfg.grammar, cfg.max_tokens_per_second)
        seconds = cfg.batch_seconds
        if not seconds:
            kind = "cuda" if device.startswith("cuda") and backend.gpu else "cpu"
            seconds = WHISPER_BATCH_SECONDS[kind] if backend.batched else CPU_BATCH_SECONDS
        return cls(backend, cfg, seconds, device)

    @classmethod
    def after_run(cls, folder, group: str) -> None:
        write_manifest(folder, group)

    def __init__(self, backend, settings: TranscribeSettings, batch_seconds: float, device: str = "cpu") -> None:
        self.backend = backend
        self.settings = settings
        self.name = f"transcribe ({backend.name})"
        self.vad = VadStage(VadSettings.from_dict(settings.vad)) if settings.vad is not None else None
        if self.vad is not None:
            self.vad.guard.succeeded = True  # its failures are this stage's, reported at once
        self.fields = SEGMENT_FIELDS if self.vad is not None else FIELDS
        if self.vad is not None:  # a record per segment, each keyed <file>-NNNN
            self.file_key = "source_key"
        super().__init__(RATE, 1, 0.0, 0.0, batch_seconds, device if backend.gpu else "cpu", "fp32",
                         pipeline=None if backend.gpu else False,
                         max_padding=float("inf") if backend.batched else settings.max_padding)
        self.set_batch_seconds(batch_seconds)
        # the view of a vad stage (the same windows and rate: one resample feeds both)
        self.window = WINDOW
        self.overlap = 0
        self.alignment = self.vad.alignment if self.vad is not None else 512

    def set_batch_seconds(self, seconds: float) -> None:
        """Whisper's clips each cost 30 s (its features are 30 s whatever the clip): a batch holds at most
        ``seconds / 30`` of them."""
        super().set_batch_seconds(seconds)
        if self.backend.batched:
            self.batcher.max_pieces = max(1, int(seconds // 30))

    # -- the Stage protocol: a file's windows gathered, then its clips batched ---------------------------

    def begin(self, ticket: int, item: Item) -> "_File":
        text = item.meta.get("text")
        keep = isinstance(text, str) and text.strip() != "" and not self.settings.overwrite_text
        vad = self.vad.begin(ticket, item) if self.vad is not None and not keep else None
        return _File(ticket, item, passthrough=keep, vad=vad)

    def add_window(self, state: "_File", number: int, window: Window, samples: np.ndarray, last: bool,
                   num_samples: int = 0) -> list[FileOutput]:
        if state.done:
            return []
        if state.passthrough:
            if not last:
                return []
            state.done = True
            record = self._record(state.item, {"key": state.item.key, "offset": 0.0,
                                               "duration": round(num_samples / RATE, 6)}, None)
            return [FileOutput(state.ticket, state.item, [record], audio_seconds=num_samples / RATE)]
        state.chunks.append(samples)
        found: list[FileOutput] = []
        if state.vad is not None:
            found = self.vad.add_window(state.vad, number, window, samples, last, num_samples)
        if not last:
            return []
        state.num_samples = num_samples
        if found and found[-1].error is not None:
            state.chunks = []
            return self.fail(state, found[-1].error)
        cuts = self._cuts(state.item, found[-1].records if found else None, num_samples)
        audio = np.concatenate(state.chunks) if state.chunks else np.zeros(0, np.float32)
        state.chunks = []
        state.cuts = cuts
        wanted = [n for n, cut in enumerate(cuts) if not cut.get("dropped")]
        state.count = len(wanted)
        if not wanted:
            state.done = True
            return [self.finish(state, [])]
        outputs: list[FileOutput] = []
        for number, index in enumerate(wanted):
            cut = cuts[index]
            start = int(round(cut["start"] * RATE))
            clip = audio[start : start + int(round(cut["duration"] * RATE))]
            state.windows[number] = index
            outputs += self.queue(Piece(state, number, clip, self.batch_key(len(clip))))
        return outputs

    def _cuts(self, item: Item, vad_records: list[dict[str, Any]] | None, num_samples: int) -> list[dict[str, Any]]:
        """The clips of a file: ``{key, start, duration, dropped}`` (start in the decoded audio)."""
        whole = round(num_samples / RATE, 6)
        if vad_records is None:
            return [{"key": item.key, "start": 0.0, "duration": whole, "dropped": None if num_samples else "no audio"}]
        if self.vad.segments is not None:  # the vad stage's own segment records
            return [{"key": r["key"], "start": r["offset"], "duration": r["duration"], "dropped": r.get("dropped"),
                     "source_key": item.key} for r in vad_records]
        record = vad_records[0]
        return [{"key": f"{item.key}-{n:04d}", "start": a, "duration": round(b - a, 6),
                 "dropped": record.get("dropped"), "source_key": item.key}
                for n, (a, b) in enumerate(record["speech_segments"])]

    def batch_key(self, num_samples: int) -> int:
        return 1 if self.backend.batched and num_samples > asr.LONG_FORM else 0

    def prepare(self, clips: list[np.ndarray]) -> tuple:
        import torch

        return list(clips), torch.tensor([len(c) for c in clips])

    def model(self, clips, lengths) -> list[asr.Transcript]:
        return self.backend.transcribe(clips)

    def unbatch(self, clips: list[np.ndarray], outputs: list[asr.Transcript]) -> list[asr.Transcript]:
        return outputs

    def join(self, windows: list[Any], results: list[Any]) -> list[Any]:
        return results

    def finish(self, state: "_File", results: list[asr.Transcript]) -> FileOutput:
        transcripts = {state.windows[n]: result for n, result in enumerate(results)}
        records = [self._record(state.item, cut, transcripts.get(n)) for n, cut in enumerate(state.cuts)]
        return FileOutput(state.ticket, state.item, records, audio_seconds=state.num_samples / RATE)

    def _record(self, item: Item, cut: dict[str, Any], transcript: asr.Transcript | None) -> dict[str, Any]:
        base = item.offset or 0.0
        record: dict[str, Any] = {"key": cut["key"], "tar_file": item.source, "audio_file": item.audio_file,
                                  "backend": self.backend.name, "offset": round(base + cut.get("start", 0.0), 6),
                                  "duration": cut["duration"]}
        if self.vad is not None:
            record["source_key"] = item.key
        flags: list[str] = []
        dropped = cut.get("dropped")
        if transcript is None and dropped is None:  # passed through: the input's own text
            record.update(text=item.meta["text"], language=item.meta.get("language"), confidence=None,
                          no_speech_prob=None)
        elif transcript is None:
            record.update(text="", language=None, confidence=None, no_speech_prob=None)
        else:
            flags = asr.flags(transcript, cut["duration"], self.settings.max_chars_per_second,
                              self.settings.no_speech_threshold)
            text = transcript.text
            if flags and self.settings.drop_flagged:
                dropped, text = "flagged: " + "; ".join(flags), ""
            record.update(text=text, language=transcript.language, confidence=_rounded(transcript.confidence),
                          no_speech_prob=_rounded(transcript.no_speech_prob))
        record.update(flags=flags, dropped=dropped)
        meta = {k: v for k, v in item.meta.items() if k not in ("offset", "duration")}
        return with_meta(record, dataclasses.replace(item, meta=meta), set(self.fields) | {"error"})


def _rounded(value: float | None) -> float | None:
    """Probabilities to 4 places: batched and single calls differ in the last float bits."""
    return None if value is None else round(float(value), 4)


@dataclass
class _File(FileState):
    passthrough: bool = False
    vad: Any = None  # the vad stage's state of this file
    chunks: list[np.ndarray] = field(default_factory=list)
    cuts: list[dict[str, Any]] = field(default_factory=list)


def write_manifest(folder, group: str) -> str:
    """``manifest.jsonl`` in the group's folder from every complete shard, in the plan's order, written
    whole and renamed into place: NeMo's ``audio_filepath``, ``duration``, ``text`` (and ``offset`` for a
    segment of a file), with ``key`` and ``language``; records dropped or without text are left out."""
    lines = []
    for record in folder.complete_records(group, errors=False):
        if record.get("dropped") or not record.get("text"):
            continue
        line = {"audio_filepath": audio_filepath(record.get("tar_file") or "", record.get("audio_file") or ""),
                "key": record["key"]}
        if record.get("offset") or "source_key" in record:
            line["offset"] = record.get("offset") or 0.0
        line.update(duration=record["duration"], text=record["text"], language=record.get("language"))
        lines.append(json.dumps(line, ensure_ascii=False))
    path = os.path.join(folder.group_dir(group), MANIFEST)
    write_atomic(path, "".join(line + "\n" for line in lines), clear_left=True)
    return path
