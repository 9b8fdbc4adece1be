"""``bench --stage vad``: the backend on pre-decoded windows (one thread, as a worker runs it), the decoders
alone, and ``audiomill vad`` end to end. VAD and decoding run side by side on the cores, so the ceiling is
the lower of the two."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from audiomill.bench.harness import Bench, common, medians, rounds_report


def measure(bench: Bench) -> dict[str, Any]:
    from audiomill.stages.vad import VadSettings, VadStage

    cfg = bench.cfg
    stage = VadStage(VadSettings(backend=cfg.backend or "silero"))
    shards = bench.shards()
    workers = bench.decode_workers("cpu")
    rounds = []
    for _ in range(max(1, cfg.repeat)):  # side by side in time: the machine's speed drifts between runs
        end_to_end, audio_seconds, rss, decoder_rss = bench.end_to_end(stage, shards, workers)
        decode, windows = bench.decode_ceiling(stage, shards, workers)
        vad = vad_ceiling(stage, windows)
        files = len(windows)
        del windows  # (not held through the next round's end to end: its peak RSS is the run's own)
        rounds.append({"vad_ceiling": round(vad, 2), "decode_ceiling": round(decode, 2),
                       "end_to_end": round(end_to_end, 2),
                       "end_to_end_over_ceiling": round(end_to_end / min(vad, decode), 3)})
    middle = medians(rounds)
    return {"stage": "vad", "backend": stage.backend.name, **common("cpu", workers, files, audio_seconds, rss,
                                                                     decoder_rss),
            "vad_ceiling": middle["vad_ceiling"], "decode_ceiling": middle["decode_ceiling"],
            "ceiling": min(middle["vad_ceiling"], middle["decode_ceiling"]), "end_to_end": middle["end_to_end"],
            "end_to_end_over_ceiling": middle["end_to_end_over_ceiling"], "rounds": rounds}


def vad_ceiling(stage, windows: dict[int, list[np.ndarray]]) -> float:
    from audiomill.vad import Levels, segments

    samples = sum(len(w) for pieces in windows.values() for w in pieces)
    started = time.perf_counter()
    for pieces in windows.values():
        stream, levels = stage.backend.stream(), Levels()
        for window in pieces:
            stream.push(window)
            levels.push(window)
        probs, _ = stream.finish()
        segments(probs, stage.backend.hop, sum(len(w) for w in pieces), stage.options, levels.finish())
    return samples / stage.sample_rate / (time.perf_counter() - started)


def report(result: dict[str, Any]) -> str:
    return rounds_report(result, f"vad: {result['backend']}", "one VAD worker",
                         [("VAD ceiling", "vad_ceiling"), ("decode ceiling", "decode_ceiling"),
                          ("end to end", "end_to_end")], "end to end / min(VAD, decode)")
