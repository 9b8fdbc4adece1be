"""``audiomill bench``: audiomill end to end against its ceilings and the naive loop, in one process.

On one corpus and one set of weights, it measures (audio seconds per wall second):

- **model ceiling**: the model on pre-decoded, pre-batched inputs (the very batches audiomill forms), in a
  tight loop;
- **decode ceiling**: reading, decoding, resampling and windowing the corpus with all decode workers and no
  model;
- **end to end**: the runner's pipeline, shards to records;
- **naive**: what data-prep scripts do today: one file at a time, decoded on the main thread, at batch size
  one.

The ceiling is min(model, decode) when the model runs on an accelerator, and 1 / (1/model + 1/decode) when
model and decoders share the CPU's cores.

One module per stage (:mod:`.tokenize`, :mod:`.vad`, :mod:`.transcribe`, :mod:`.tts`, and :mod:`.kind` for
any other registered kind or ``module:Class``), each a ``measure(bench)`` and a ``report(result)`` on the
shared harness of :mod:`.harness` (the corpus, the decode ceiling, the end-to-end run, memory, the rounds).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field

from audiomill.stages.settings import default
from audiomill.stages.tokenize import TokenizeSettings
from audiomill.stages.transcribe import TranscribeSettings

BENCHES = {"tokenize": "audiomill.bench.tokenize", "vad": "audiomill.bench.vad",
           "transcribe": "audiomill.bench.transcribe", "prepare-tts": "audiomill.bench.tts"}
OTHER = "audiomill.bench.kind"  # any other registered kind, or module:Class


@dataclass
class BenchConfig:
    codec: str = default(TokenizeSettings, "codec")
    model_path: str | None = None
    tiny: bool = False
    corpus: list[str] = field(default_factory=list)
    corpus_seconds: float = 1200.0
    longest_seconds: float = 600.0
    device: str = "auto"
    decode_workers: int = 0
    batch_seconds: float = 0.0
    chunk_seconds: float = default(TokenizeSettings, "chunk_seconds")
    overlap_seconds: float = default(TokenizeSettings, "overlap_seconds")
    precision: str = default(TokenizeSettings, "precision")
    compile: bool = False
    batching: str = default(TokenizeSettings, "batching")
    agreement: bool = False
    naive: bool = True
    work_dir: str | None = None
    json: bool = False
    stage: str = "tokenize"  # a key of BENCHES, else a registered kind or module:Class
    backend: str | None = None  # --stage vad (silero) or transcribe (whisper)
    grammar: str | None = None  # --stage transcribe, pocketsphinx
    max_tokens_per_second: float = default(TranscribeSettings, "max_tokens_per_second")  # --stage transcribe
    set: list[str] = field(default_factory=list)  # --set KEY=VALUE: a stage of one's own's settings
    repeat: int = 3  # rounds of (end to end, decode ceiling, model or stage ceiling); medians reported


def bench_module(stage: str):
    """The module that measures ``stage``."""
    return importlib.import_module(BENCHES.get(stage, OTHER))


def run_bench(cfg: BenchConfig) -> int:
    from audiomill.bench.harness import Bench

    module = bench_module(cfg.stage)
    result = Bench(cfg).run(module.measure)
    print(json.dumps(result) if cfg.json else module.report(result))
    return 0
