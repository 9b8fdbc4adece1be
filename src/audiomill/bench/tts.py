"""``bench --stage prepare-tts``: the indextts stage (w2v-BERT, RepCodec, the conditioning paths) on each
file's pre-computed filter banks, the decoders (which compute them), the stage end to end, and the naive
loop (decode and filter banks on this thread, one file at a time). Without --model-path: a release of the
real sizes with random weights (--tiny: the test sizes), made in the work folder."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from audiomill.bench.harness import Bench, bench_device, ceiling, common, model_report, synchronize, with_naive


def _release(bench: Bench) -> str:
    from audiomill.codecs.maskgct import save_random
    from audiomill.conditioning import REAL_GPT, save_tiny

    if bench.cfg.model_path:
        return bench.cfg.model_path
    release = os.path.join(bench.work, "release")
    if bench.cfg.tiny:
        save_tiny(save_random(release), features=16)
    else:  # w2v-BERT 2.0's and RepCodec's own sizes, IndexTTS2's conditioning
        save_tiny(save_random(release, semantic={"num_hidden_layers": 24}, codec={"codebook_size": 8192}),
                  features=1024, gpt=REAL_GPT)
    return release


def measure(bench: Bench) -> dict[str, Any]:
    from audiomill.stages.tts import TtsStage

    cfg = bench.cfg
    device = bench_device(cfg.device)
    stage = TtsStage.build(TtsStage.check({"model_path": _release(bench), "batch_seconds": cfg.batch_seconds,
                                           "precision": cfg.precision}), device)
    shards = bench.shards()
    workers = bench.decode_workers(device)
    stage.encode_arrays([np.zeros(16000, np.float32)])  # warm up
    end_to_end, audio_seconds, rss, decoder_rss = bench.end_to_end(stage, shards, workers)
    counts = stage.counts.summary()
    decode, windows = bench.decode_ceiling(stage, shards, workers)
    clips = [piece for pieces in windows.values() for piece in pieces]
    del windows
    started = time.perf_counter()
    for clip in clips:
        stage.encode_tensors(*stage.prepare([clip]))
    synchronize(stage)
    model = sum(len(clip) for clip in clips) / stage.sample_rate / (time.perf_counter() - started)
    naive = None
    if cfg.naive:
        started, total = time.perf_counter(), 0
        for samples in bench.decoded_one_by_one(shards, stage.sample_rate):
            stage.encode_arrays([samples])
            total += len(samples)
        synchronize(stage)
        naive = total / stage.sample_rate / (time.perf_counter() - started)
    both = ceiling(model, decode, device)
    result = {"stage": "prepare-tts", "backend": "indextts",
              "weights": cfg.model_path or ("tiny random" if cfg.tiny else "real sizes, random"),
              **common(device, workers, len(clips), audio_seconds, rss, decoder_rss),
              "batch_seconds": stage.batcher.max_samples / stage.sample_rate, "precision": cfg.precision,
              "model_ceiling": round(model, 2), "decode_ceiling": round(decode, 2), "ceiling": round(both, 2),
              "end_to_end": round(end_to_end, 2), "end_to_end_over_ceiling": round(end_to_end / both, 3), **counts}
    stage.close()
    return with_naive(result, naive)


report = model_report
