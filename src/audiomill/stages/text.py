"""The text stage: an utterance's transcript, cleaned, normalised and as SentencePiece ids.

The text comes with the item (a manifest's or a dataset's ``text``, a tar sample's JSON); the
audio is only measured (``duration``), window by window, never held. A record::

    {"key", "tar_file", "audio_file", "text", "text_ids": [int32, ...], "text_len", "language",
     "duration", <metadata>}

``text`` is the normalised text (:func:`audiomill.text.normalise`; the input's own is kept under
``meta``), ``text_ids`` SentencePiece's ``encode`` of it with the ``tokenizer`` model. An utterance
without text, or whose text is empty once cleaned, is an error record that says so.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiomill import text as textlib
from audiomill.chunking import Window
from audiomill.errors import UsageError
from audiomill.items import Item
from audiomill.stages import FileOutput, with_meta
from audiomill.stages.perfile import PerFileStage
from audiomill.stages.settings import from_table, setting

RATE = 16000
WINDOW = 1024 * 512  # vad's and transcribe's window: one view feeds them all
FIELDS = {"key": "string", "tar_file": "string", "audio_file": "string", "text": "string",
          "text_ids": "list<int32>", "text_len": "int64", "language": "string", "duration": "float64"}


@dataclass
class TextSettings:
    tokenizer: str = setting("", "a SentencePiece model (see 'audiomill train-tokenizer')", metavar="FILE.model",
                             required=True)
    language: str | None = setting(None, "the text's language for normalisation (en: numbers as words); default: "
                                         "each utterance's own 'language'", metavar="CODE")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TextSettings":
        return cls(**from_table(cls, data, "text"))


def load_tokenizer(path: str):
    try:
        import sentencepiece
    except ImportError as exc:
        raise UsageError(f"text ids need sentencepiece ({exc}): pip install 'audiomill[tts]'") from None
    if not path:
        raise UsageError("--tokenizer FILE.model is needed: a SentencePiece model (see 'audiomill train-tokenizer')")
    if not os.path.isfile(path):
        raise UsageError(f"--tokenizer {path}: no such file")
    try:
        return sentencepiece.SentencePieceProcessor(model_file=path)
    except Exception as exc:  # not a SentencePiece model
        raise UsageError(f"--tokenizer {path}: not a SentencePiece model ({type(exc).__name__}: {exc})") from None


class TextStage(PerFileStage):
    name = "text"
    sample_rate = RATE
    window = WINDOW
    overlap = 0
    alignment = 512
    fields = FIELDS
    needs = ("sentencepiece",)
    Settings = TextSettings

    @classmethod
    def check(cls, settings: dict[str, Any]) -> dict[str, Any]:
        cfg = TextSettings.from_dict(settings)
        cfg.tokenizer = os.path.abspath(cfg.tokenizer) if cfg.tokenizer else ""
        load_tokenizer(cfg.tokenizer)
        return dataclasses.asdict(cfg)

    @classmethod
    def build(cls, settings: dict[str, Any], device: str) -> "TextStage":
        return cls(TextSettings.from_dict(settings))

    def __init__(self, settings: TextSettings) -> None:
        self.settings = settings
        self.tokenizer = load_tokenizer(settings.tokenizer)
        super().__init__()

    def add_window(self, state: tuple[int, Item], number: int, window: Window, samples: np.ndarray, last: bool,
                   num_samples: int = 0) -> list[FileOutput]:
        if not last:
            return []
        ticket, item = state
        try:
            record = self.record(item, num_samples)
        except ValueError as exc:  # no text: the utterance's fault
            return [FileOutput(ticket, item, error=str(exc), audio_seconds=num_samples / RATE)]
        except Exception as exc:
            return self.guard.failed(FileOutput(ticket, item, error=f"text failed: {type(exc).__name__}: {exc}"), exc)
        output = FileOutput(ticket, item, [record], audio_seconds=num_samples / RATE)
        return (self.guard.worked() if not self.guard.succeeded else []) + [output]

    def record(self, item: Item, num_samples: int) -> dict[str, Any]:
        raw = item.meta.get("text")
        if not isinstance(raw, str):
            raise ValueError("no text: the item has no 'text' field (a manifest's, a dataset's --text-column, "
                             "or a tar sample's JSON)")
        language = self.settings.language or item.meta.get("language") or item.meta.get("lang")
        normal = textlib.normalise(raw, language if isinstance(language, str) else None)
        if not normal:
            raise ValueError(f"the text is empty once cleaned: {raw!r}")
        ids = self.tokenizer.encode(normal, out_type=int)
        if not ids:
            raise ValueError(f"the tokenizer gives no ids for {normal!r}")
        record = {"key": item.key, "tar_file": item.source, "audio_file": item.audio_file, "text": normal,
                  "text_ids": ids, "text_len": len(ids), "language": language if isinstance(language, str) else None,
                  "duration": round(num_samples / RATE, 6)}
        return with_meta(record, item, set(FIELDS) | {"error"})
