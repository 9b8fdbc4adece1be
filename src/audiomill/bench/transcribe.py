"""``bench --stage transcribe``: the backend on batches of whole pre-decoded files (as the stage batches
them), the decoders alone, ``audiomill transcribe`` end to end, and the naive loop (one file at a time,
decoded on this thread, transcribed alone)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from audiomill.bench.harness import Bench, batches_of, bench_device, ceiling, common, model_report, with_naive


def measure(bench: Bench) -> dict[str, Any]:
    from audiomill import asr
    from audiomill.stages.transcribe import TranscribeSettings, TranscribeStage

    cfg = bench.cfg
    device = bench_device(cfg.device)
    name = cfg.backend or "whisper"
    weights = cfg.model_path
    if name == "whisper" and cfg.tiny:
        weights = asr.save_tiny_whisper(os.path.join(bench.work, "tiny-whisper"))
    settings = TranscribeSettings(backend=name, model_path=weights, grammar=cfg.grammar, precision=cfg.precision,
                                  max_tokens_per_second=cfg.max_tokens_per_second, batch_seconds=cfg.batch_seconds)
    stage = TranscribeStage.build(TranscribeStage.check({k: v for k, v in vars(settings).items() if k != "weights"}),
                                  device)
    shards = bench.shards()
    workers = bench.decode_workers(device)
    stage.backend.transcribe([np.zeros(asr.RATE, np.float32)])  # warm up
    end_to_end, audio_seconds, rss, decoder_rss = bench.end_to_end(stage, shards, workers)
    counts = stage.counts.summary()
    decode, windows = bench.decode_ceiling(stage, shards, workers)
    files = {ticket: np.concatenate(pieces) for ticket, pieces in windows.items() if pieces}
    del windows
    started = time.perf_counter()
    for batch in batches_of(stage, {ticket: [samples] for ticket, samples in files.items()}):
        stage.encode_tensors(*stage.prepare(batch))
    model = sum(len(s) for s in files.values()) / asr.RATE / (time.perf_counter() - started)
    naive = None
    if cfg.naive:
        started, total = time.perf_counter(), 0
        for samples in bench.decoded_one_by_one(shards, asr.RATE):
            stage.backend.transcribe([samples])
            total += len(samples)
        naive = total / asr.RATE / (time.perf_counter() - started)
    both = ceiling(model, decode, device)
    result = {"stage": "transcribe", "backend": name, "weights": weights or "the wheel's English model",
              **common(device, workers, len(files), audio_seconds, rss, decoder_rss),
              "batch_seconds": stage.batcher.max_samples / asr.RATE, "precision": cfg.precision,
              "max_tokens_per_second": cfg.max_tokens_per_second, "model_ceiling": round(model, 2),
              "decode_ceiling": round(decode, 2), "ceiling": round(both, 2), "end_to_end": round(end_to_end, 2),
              "end_to_end_over_ceiling": round(end_to_end / both, 3), **counts}
    stage.close()
    return with_naive(result, naive)


report = model_report
