"""audiomill bench through the real command line, on a tiny corpus it makes itself."""

from __future__ import annotations

import json

from audiomill.bench.harness import corpus_durations
from tests.conftest import run_audiomill


def test_corpus_spans_one_second_to_the_longest_file():
    durations = corpus_durations(1200, 600)
    assert max(durations) == 600 and min(durations) >= 1.0 and sum(durations) >= 1200
    assert any(d < 5 for d in durations) and any(20 < d < 60 for d in durations)


def test_bench_json_reports_every_figure_and_consistent_ratios(tmp_path):
    result = run_audiomill("bench", "--tiny", "--corpus-seconds", "40", "--longest-seconds", "20", "--json",
                           "--agreement", "--repeat", "2", "--work-dir", str(tmp_path), check=True)
    figures = json.loads(result.stdout)
    for name in ("model_ceiling", "decode_ceiling", "ceiling", "end_to_end", "naive", "peak_rss_mb"):
        assert figures[name] > 0, name
    # rounds side by side in time, each with its own ratios; the medians reported
    import statistics

    rounds = figures["rounds"]
    assert len(rounds) == 2
    for one in rounds:
        model, decode = one["model_ceiling"], one["decode_ceiling"]
        assert abs(one["ceiling"] - 1 / (1 / model + 1 / decode)) < 0.02  # CPU: model and decoders share cores
        assert abs(one["end_to_end_over_ceiling"] - one["end_to_end"] / one["ceiling"]) < 0.01
    for name in ("model_ceiling", "decode_ceiling", "ceiling", "end_to_end", "end_to_end_over_ceiling"):
        assert figures[name] == statistics.median(one[name] for one in rounds), name
    assert figures["corpus_audio_seconds"] >= 40
    # how full the end-to-end run's batches were: every file is at least one clip of some model call
    assert figures["model_calls"] >= 1 and figures["mean_batch_clips"] >= 1.0
    assert figures["model_calls"] * figures["mean_batch_clips"] >= figures["corpus_files"]
    assert 0.0 <= figures["padding_fraction"] < 1.0 and figures["repair_fraction"] == 0.0  # no codec repairs yet
    agreement = figures["agreement"]
    assert set(agreement) == {"bf16", "fp16", "compile"}
    for option in agreement.values():
        assert "error" in option or 0.0 <= option["identical_codes"] <= 1.0
    # the end-to-end run wrote real records for the whole corpus
    records = sum(1 for path in (tmp_path / "tokens").glob("*.jsonl") for _ in open(path))
    assert records == figures["corpus_files"]


def test_bench_stage_vad_reports_its_ceilings_and_end_to_end(tmp_path):
    result = run_audiomill("bench", "--stage", "vad", "--corpus-seconds", "40", "--longest-seconds", "20", "--json",
                           "--work-dir", str(tmp_path), check=True)
    figures = json.loads(result.stdout)
    for name in ("vad_ceiling", "decode_ceiling", "ceiling", "end_to_end", "peak_rss_mb"):
        assert figures[name] > 0, name
    assert figures["ceiling"] == min(figures["vad_ceiling"], figures["decode_ceiling"])
    assert figures["corpus_audio_seconds"] >= 40 and figures["backend"] == "silero"
    # rounds side by side in time (the machine's speed drifts), medians reported
    import statistics

    rounds = figures["rounds"]
    assert len(rounds) == 3 and all(r["end_to_end"] > 0 for r in rounds)
    assert figures["end_to_end_over_ceiling"] == statistics.median(r["end_to_end_over_ceiling"] for r in rounds)
    assert figures["vad_ceiling"] == statistics.median(r["vad_ceiling"] for r in rounds)


def test_decode_ceiling_feeds_large_tasks_without_deadlock(tmp_path, monkeypatch):
    """Members of a compressed tar go to the decoders as bytes, more than a pipe holds; the
    decoders' windows, pickled here (no ring), also fill their pipe. Handing out tasks from the
    loop that reads the windows deadlocked on the default corpus: each end waited on the other."""
    import io
    import tarfile
    import threading

    import numpy as np
    import soundfile as sf

    from audiomill.bench.harness import Bench
    from audiomill.runner import decode
    from audiomill.sources.discover import discover_shards
    from audiomill.stages.vad import VadSettings, VadStage

    archive = tmp_path / "big.tar.gz"
    rng = np.random.default_rng(0)
    with tarfile.open(archive, "w:gz") as tar:
        for index in range(4):
            buffer = io.BytesIO()
            sf.write(buffer, rng.uniform(-0.5, 0.5, 5 * 16000).astype(np.float32), 16000, format="WAV",
                     subtype="FLOAT")
            member = tarfile.TarInfo(f"noise{index}.wav")
            member.size = len(buffer.getvalue())
            tar.addfile(member, io.BytesIO(buffer.getvalue()))
    monkeypatch.setattr(decode, "open_ring", lambda size=decode.RING_BYTES: None)
    stage = VadStage(VadSettings())
    result: list = []
    worker = threading.Thread(target=lambda: result.append(
        Bench.decode_ceiling(None, stage, discover_shards([str(archive)], files_per_shard=10), 1)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert result, "the decode ceiling did not finish"
    speed, windows = result[0]
    assert speed > 0 and [sum(len(w) for w in pieces) for pieces in windows.values()] == [80000] * 4


def test_bench_stage_transcribe_reports_ceilings_end_to_end_and_the_naive_loop(tmp_path):
    result = run_audiomill("bench", "--stage", "transcribe", "--tiny", "--max-tokens-per-second", "2",
                           "--corpus-seconds", "12", "--longest-seconds", "4", "--json", "--work-dir", str(tmp_path),
                           check=True)
    figures = json.loads(result.stdout)
    for name in ("model_ceiling", "decode_ceiling", "ceiling", "end_to_end", "naive", "peak_rss_mb"):
        assert figures[name] > 0, name
    assert figures["backend"] == "whisper" and figures["corpus_audio_seconds"] >= 12
    assert figures["mean_batch_clips"] > 1  # short files share a model call
    assert abs(figures["end_to_end_over_naive"] - figures["end_to_end"] / figures["naive"]) < 0.02


def test_bench_stage_prepare_tts_reports_its_figures(tmp_path):
    result = run_audiomill("bench", "--stage", "prepare-tts", "--tiny", "--corpus-seconds", "8", "--longest-seconds",
                           "4", "--json", "--work-dir", str(tmp_path), check=True)
    figures = json.loads(result.stdout)
    for name in ("model_ceiling", "decode_ceiling", "ceiling", "end_to_end", "naive", "peak_rss_mb"):
        assert figures[name] > 0, name
    assert figures["stage"] == "prepare-tts" and figures["mean_batch_clips"] == 1.0  # one clip a call
    assert figures["corpus_audio_seconds"] >= 8
