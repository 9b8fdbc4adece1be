"""``audiomill bench``: audiomill end to end against its ceilings and the naive loop, in one process.

On one corpus and one set of weights, it measures (audio seconds per wall second):

- **model ceiling**: the codec's encode on pre-decoded, pre-batched windows (the very
  batches audiomill forms), in a tight loop;
- **decode ceiling**: reading, decoding, resampling and windowing the corpus with all
  decode workers and no model;
- **end to end**: ``audiomill tokenize``'s pipeline, shards to JSONL;
- **naive**: what data-prep scripts do today: one file at a time, decoded on the
  main thread, encoded window by window at batch size one.

The ceiling is min(model, decode) when the model runs on an accelerator, and
1 / (1/model + 1/decode) when model and decoders share the CPU's cores.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiomill.corpus import encode_audio, speech, write_tar
from audiomill.errors import UsageError
from audiomill.stages.settings import default
from audiomill.stages.tokenize import TokenizeSettings
from audiomill.stages.transcribe import TranscribeSettings

log = logging.getLogger(__name__)

BENCH_FORMATS = ("mp3", "flac", "wav")  # MP3 44.1 kHz stereo, FLAC 48 kHz, WAV 16 kHz


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
    stage: str = "tokenize"  # or "vad": the VAD ceiling, the decode ceiling and end to end
    backend: str | None = None  # --stage vad (silero) or transcribe (whisper)
    grammar: str | None = None  # --stage transcribe, pocketsphinx
    max_tokens_per_second: float = default(TranscribeSettings, "max_tokens_per_second")  # --stage transcribe
    set: list[str] = field(default_factory=list)  # --set KEY=VALUE: a stage of one's own's settings
    repeat: int = 3  # rounds of (end to end, decode ceiling, model or VAD ceiling); medians reported


# -- the corpus ---------------------------------------------------------------------------------

def corpus_durations(total: float, longest: float, seed: int = 0) -> list[float]:
    """One file of ``longest`` seconds, the rest log-uniform between 1 s and min(60 s, longest)."""
    rng = random.Random(seed)
    durations = [longest] if longest <= total else []
    short_max = max(1.0, min(60.0, longest))
    while sum(durations) < total:
        durations.append(round(math.exp(rng.uniform(0.0, math.log(short_max))), 2))
    rng.shuffle(durations)
    return durations


def make_corpus(folder: str, total: float, longest: float, shards: int = 2) -> list[str]:
    """Tar shards of espeak-ng speech, MP3 44.1 kHz stereo / FLAC 48 kHz / WAV 16 kHz in turn."""
    os.makedirs(folder, exist_ok=True)
    durations = corpus_durations(total, longest)
    per_shard = -(-len(durations) // shards)
    paths = []
    for shard in range(shards):
        members = []
        for number in range(shard * per_shard, min(len(durations), (shard + 1) * per_shard)):
            samples, rate = speech(durations[number], seed=number)
            extension = BENCH_FORMATS[number % len(BENCH_FORMATS)]
            members.append((f"bench/{number:05d}.{extension}", encode_audio(samples, rate, extension)))
        path = os.path.join(folder, f"bench-{shard:03d}.tar")
        write_tar(path, members)
        paths.append(path)
    return paths


# -- memory --------------------------------------------------------------------------------------

def reset_peak_rss() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mb(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if pid == "self" else 0.0


# -- the measurements ----------------------------------------------------------------------------

class Bench:
    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.work = cfg.work_dir or tempfile.mkdtemp(prefix="audiomill-bench-")
        self.owns_work = cfg.work_dir is None
        # the decode ceiling's files and windows (kept beside the samples, for a stage of one's own)
        self.items: dict[int, Any] = {}
        self.marks: dict[int, list[tuple[Any, int]]] = {}

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            if self.owns_work:
                shutil.rmtree(self.work, ignore_errors=True)

    def _shards(self):
        from audiomill.sources.discover import discover_shards

        cfg = self.cfg
        if cfg.corpus:
            return discover_shards(cfg.corpus, files_per_shard=1000)
        log.info("bench: making %.0f s of speech (longest file %.0f s)", cfg.corpus_seconds, cfg.longest_seconds)
        paths = make_corpus(os.path.join(self.work, "corpus"), cfg.corpus_seconds, cfg.longest_seconds)
        return discover_shards(paths, files_per_shard=1000)

    def _run_vad(self) -> dict[str, Any]:
        """``--stage vad``: the backend on pre-decoded windows (one thread, as a worker runs it), the
        decoders alone, and ``audiomill vad`` end to end; VAD and decoding run side by side on the cores,
        so the ceiling is the lower of the two."""
        from audiomill.runner.local import default_decode_workers
        from audiomill.stages.vad import VadSettings, VadStage

        cfg = self.cfg
        stage = VadStage(VadSettings(backend=cfg.backend or "silero"))
        shards = self._shards()
        workers = cfg.decode_workers or default_decode_workers("cpu", 1)
        rounds = []
        for _ in range(max(1, cfg.repeat)):  # side by side in time: the machine's speed drifts between runs
            end_to_end, audio_seconds, rss, decoder_rss = self._end_to_end(stage, shards, workers)
            decode, windows = self._decode_ceiling(stage, shards, workers)
            vad = self._vad_ceiling(stage, windows)
            files = len(windows)
            del windows  # (not held through the next round's end to end: its peak RSS is the run's own)
            rounds.append({"vad_ceiling": round(vad, 2), "decode_ceiling": round(decode, 2),
                           "end_to_end": round(end_to_end, 2),
                           "end_to_end_over_ceiling": round(end_to_end / min(vad, decode), 3)})
        middle = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        return {"stage": "vad", "backend": stage.backend.name, "device": _device_name("cpu"),
                "cpu_cores": os.cpu_count(),
                "decode_workers": workers, "corpus_files": files, "corpus_audio_seconds": round(audio_seconds, 1),
                "vad_ceiling": middle["vad_ceiling"], "decode_ceiling": middle["decode_ceiling"],
                "ceiling": min(middle["vad_ceiling"], middle["decode_ceiling"]), "end_to_end": middle["end_to_end"],
                "end_to_end_over_ceiling": middle["end_to_end_over_ceiling"], "rounds": rounds,
                "peak_rss_mb": round(rss, 1), "decoder_peak_rss_mb": round(decoder_rss, 1),
                "date": time.strftime("%Y-%m-%d")}

    @staticmethod
    def _vad_ceiling(stage, windows: dict[int, list[np.ndarray]]) -> float:
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

    def _run_transcribe(self) -> dict[str, Any]:
        """``--stage transcribe``: the backend on batches of whole pre-decoded files (as the stage batches
        them), the decoders alone, ``audiomill transcribe`` end to end, and the naive loop (one file at a
        time, decoded on this thread, transcribed alone)."""
        from audiomill import asr
        from audiomill.runner.local import default_decode_workers
        from audiomill.stages.transcribe import TranscribeSettings, TranscribeStage

        cfg = self.cfg
        device = _bench_device(cfg.device)
        name = cfg.backend or "whisper"
        weights = cfg.model_path
        if name == "whisper" and cfg.tiny:
            weights = asr.save_tiny_whisper(os.path.join(self.work, "tiny-whisper"))
        settings = TranscribeSettings(backend=name, model_path=weights, grammar=cfg.grammar, precision=cfg.precision,
                                      max_tokens_per_second=cfg.max_tokens_per_second, batch_seconds=cfg.batch_seconds)
        checked = TranscribeStage.check({k: v for k, v in vars(settings).items() if k != "weights"})
        stage = TranscribeStage.build(checked, device)
        shards = self._shards()
        workers = cfg.decode_workers or default_decode_workers(device, 1)
        stage.backend.transcribe([np.zeros(asr.RATE, np.float32)])  # warm up
        end_to_end, audio_seconds, rss, decoder_rss = self._end_to_end(stage, shards, workers)
        counts = stage.counts.summary()
        decode, windows = self._decode_ceiling(stage, shards, workers)
        files = {ticket: np.concatenate(pieces) for ticket, pieces in windows.items() if pieces}
        del windows
        batches = self._batches(stage, {ticket: [samples] for ticket, samples in files.items()})
        started = time.perf_counter()
        for batch in batches:
            stage.encode_tensors(*stage.prepare(batch))
        model = sum(len(s) for s in files.values()) / asr.RATE / (time.perf_counter() - started)
        naive = None
        if cfg.naive:
            started = time.perf_counter()
            total = 0
            for samples in self._decoded_one_by_one(shards, asr.RATE):
                stage.backend.transcribe([samples])
                total += len(samples)
            naive = total / asr.RATE / (time.perf_counter() - started)
        ceiling = min(model, decode) if device.startswith("cuda") else 1 / (1 / model + 1 / decode)
        result = {"stage": "transcribe", "backend": name, "weights": weights or "the wheel's English model",
                  "device": _device_name(device), "cpu_cores": os.cpu_count(), "decode_workers": workers,
                  "batch_seconds": stage.batcher.max_samples / asr.RATE, "precision": cfg.precision,
                  "max_tokens_per_second": cfg.max_tokens_per_second, "corpus_files": len(files),
                  "corpus_audio_seconds": round(audio_seconds, 1), "model_ceiling": round(model, 2),
                  "decode_ceiling": round(decode, 2), "ceiling": round(ceiling, 2), "end_to_end": round(end_to_end, 2),
                  "end_to_end_over_ceiling": round(end_to_end / ceiling, 3), **counts,
                  "peak_rss_mb": round(rss, 1), "decoder_peak_rss_mb": round(decoder_rss, 1),
                  "date": time.strftime("%Y-%m-%d")}
        if naive is not None:
            result.update(naive=round(naive, 2), end_to_end_over_naive=round(end_to_end / naive, 2))
        stage.close()
        return result

    def _run_tts(self) -> dict[str, Any]:
        """``--stage prepare-tts``: the indextts stage (w2v-BERT, RepCodec, the conditioning paths) on each
        file's pre-computed filter banks, the decoders (which compute them), the stage end to end, and the
        naive loop (decode and filter banks on this thread, one file at a time). Without --model-path: a
        release of the real sizes with random weights (--tiny: the test sizes), made in the work folder."""
        from audiomill.codecs.maskgct import save_random
        from audiomill.conditioning import REAL_GPT, save_tiny
        from audiomill.runner.local import default_decode_workers
        from audiomill.stages.tts import TtsStage

        cfg = self.cfg
        device = _bench_device(cfg.device)
        release = cfg.model_path
        if not release:
            release = os.path.join(self.work, "release")
            if cfg.tiny:
                save_tiny(save_random(release), features=16)
            else:  # w2v-BERT 2.0's and RepCodec's own sizes, IndexTTS2's conditioning
                save_tiny(save_random(release, semantic={"num_hidden_layers": 24}, codec={"codebook_size": 8192}),
                          features=1024, gpt=REAL_GPT)
        stage = TtsStage.build(TtsStage.check({"model_path": release, "batch_seconds": cfg.batch_seconds,
                                               "precision": cfg.precision}), device)
        shards = self._shards()
        workers = cfg.decode_workers or default_decode_workers(device, 1)
        stage.encode_arrays([np.zeros(16000, np.float32)])  # warm up
        end_to_end, audio_seconds, rss, decoder_rss = self._end_to_end(stage, shards, workers)
        counts = stage.counts.summary()
        decode, windows = self._decode_ceiling(stage, shards, workers)
        clips = [piece for pieces in windows.values() for piece in pieces]
        del windows
        started = time.perf_counter()
        for clip in clips:
            stage.encode_tensors(*stage.prepare([clip]))
        _synchronize(stage)
        model = sum(len(clip) for clip in clips) / stage.sample_rate / (time.perf_counter() - started)
        naive = None
        if cfg.naive:
            started, total = time.perf_counter(), 0
            for samples in self._decoded_one_by_one(shards, stage.sample_rate):
                stage.encode_arrays([samples])
                total += len(samples)
            _synchronize(stage)
            naive = total / stage.sample_rate / (time.perf_counter() - started)
        ceiling = min(model, decode) if device.startswith("cuda") else 1 / (1 / model + 1 / decode)
        result = {"stage": "prepare-tts", "backend": "indextts", "weights": cfg.model_path or (
                      "tiny random" if cfg.tiny else "real sizes, random"),
                  "device": _device_name(device), "cpu_cores": os.cpu_count(), "decode_workers": workers,
                  "batch_seconds": stage.batcher.max_samples / stage.sample_rate, "precision": cfg.precision,
                  "corpus_files": len(clips), "corpus_audio_seconds": round(audio_seconds, 1),
                  "model_ceiling": round(model, 2), "decode_ceiling": round(decode, 2), "ceiling": round(ceiling, 2),
                  "end_to_end": round(end_to_end, 2), "end_to_end_over_ceiling": round(end_to_end / ceiling, 3),
                  **counts, "peak_rss_mb": round(rss, 1), "decoder_peak_rss_mb": round(decoder_rss, 1),
                  "date": time.strftime("%Y-%m-%d")}
        if naive is not None:
            result.update(naive=round(naive, 2), end_to_end_over_naive=round(end_to_end / naive, 2))
        stage.close()
        return result

    def _run_kind(self) -> dict[str, Any]:
        """``--stage KIND``, any other registered kind or ``module:Class``, its settings from ``--set
        KEY=VALUE``: the stage alone on pre-decoded windows (one thread), the decoders alone, and the runner
        end to end; the stage and the decoders share the cores, so the ceiling is 1/(1/stage + 1/decode)."""
        from audiomill.runner.local import default_decode_workers
        from audiomill.stages import stage_class
        from audiomill.stages.specs import table_settings

        cfg = self.cfg
        cls = stage_class(cfg.stage)
        settings = cls.check(table_settings(cfg.stage, dict(_setting_pair(pair) for pair in cfg.set)))
        stage = cls.build(settings, "cpu")
        shards = self._shards()
        workers = cfg.decode_workers or default_decode_workers("cpu", 1)
        rounds = []
        try:
            for _ in range(max(1, cfg.repeat)):
                end_to_end, audio_seconds, rss, decoder_rss = self._end_to_end(stage, shards, workers)
                decode, windows = self._decode_ceiling(stage, shards, workers)
                alone = self._stage_ceiling(cls.build(settings, "cpu"), windows)
                ceiling = 1 / (1 / alone + 1 / decode)
                files = len(windows)
                del windows
                rounds.append({"stage_ceiling": round(alone, 2), "decode_ceiling": round(decode, 2),
                               "ceiling": round(ceiling, 2), "end_to_end": round(end_to_end, 2),
                               "end_to_end_over_ceiling": round(end_to_end / ceiling, 3)})
        finally:
            stage.close()
        middle = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        return {"stage": cfg.stage, "settings": settings, "device": _device_name("cpu"),
                "cpu_cores": os.cpu_count(), "decode_workers": workers, "corpus_files": files,
                "corpus_audio_seconds": round(audio_seconds, 1), **middle, "rounds": rounds,
                "peak_rss_mb": round(rss, 1), "decoder_peak_rss_mb": round(decoder_rss, 1),
                "date": time.strftime("%Y-%m-%d")}

    def _stage_ceiling(self, stage, windows: dict[int, list[np.ndarray]]) -> float:
        """Audio seconds per second of the stage alone over the decoded windows, as a worker feeds them."""
        samples = sum(len(w) for pieces in windows.values() for w in pieces)
        started = time.perf_counter()
        try:
            for ticket, pieces in windows.items():
                state = stage.begin(ticket, self.items[ticket])
                for number, (samples_, (window, num_samples)) in enumerate(zip(pieces, self.marks[ticket])):
                    stage.add_window(state, number, window, samples_, number == len(pieces) - 1, num_samples)
                stage.flush()
            while stage.waiting:
                stage.flush(end=True)
            elapsed = time.perf_counter() - started
        finally:
            stage.close()
        return samples / stage.sample_rate / elapsed

    def _decoded_one_by_one(self, shards, rate: int):
        from audiomill.audio import decode
        from audiomill.errors import DecodeError
        from audiomill.runner.decode import task_source
        from audiomill.sources import read_shard

        for shard in shards:
            for item in read_shard(shard):
                if item.error is None:
                    try:
                        yield decode(task_source(item), rate, item.offset, item.duration).samples
                    except DecodeError:
                        continue

    def _run(self) -> dict[str, Any]:
        if self.cfg.stage == "vad":
            return self._run_vad()
        if self.cfg.stage == "transcribe":
            return self._run_transcribe()
        if self.cfg.stage == "prepare-tts":
            return self._run_tts()
        if self.cfg.stage != "tokenize":
            return self._run_kind()
        import torch

        from audiomill.codecs import codec_info, load_codec, resolve_weights
        from audiomill.runner.local import default_decode_workers, limit_kernel_cache, parse_devices
        from audiomill.stages.budget import CPU_BATCH_SECONDS, batch_budget

        cfg = self.cfg
        info = codec_info(cfg.codec)
        devices = parse_devices(cfg.device)
        device = devices[0]
        limit_kernel_cache(device)
        if cfg.tiny:
            module = importlib.import_module(info.module)
            weights = module.save_tiny(info, os.path.join(self.work, "tiny-model"))
            weights_label = "tiny random config"
        elif cfg.model_path:
            weights = resolve_weights(info, cfg.model_path)
            weights_label = cfg.model_path
        else:
            weights = None
            weights_label = "full-size random weights"
        shards = self._shards()
        workers = cfg.decode_workers or default_decode_workers(device, 1)
        codec = load_codec(cfg.codec, weights, device)
        stage = self._stage(codec, cfg.batch_seconds or CPU_BATCH_SECONDS, cfg.precision, cfg.compile)
        batch_seconds = cfg.batch_seconds or batch_budget(stage, device)
        stage.set_batch_seconds(batch_seconds)
        self._warm_up(stage)

        on_accelerator = device.startswith("cuda")
        rounds, rss, decoder_rss = [], 0.0, 0.0
        for _ in range(max(1, cfg.repeat)):  # side by side in time: the machine's speed drifts between runs
            windows = batches = reference = None  # (not held through this round's end to end)
            end_to_end, audio_seconds, round_rss, round_decoder_rss = self._end_to_end(stage, shards, workers)
            rss, decoder_rss = max(rss, round_rss), max(decoder_rss, round_decoder_rss)
            batching = stage.counts.summary()  # of the end-to-end run
            decode, windows = self._decode_ceiling(stage, shards, workers)
            batches = self._batches(stage, windows)
            model, reference = self._model_ceiling(stage, batches)
            ceiling = min(model, decode) if on_accelerator else 1.0 / (1.0 / model + 1.0 / decode)
            rounds.append({"model_ceiling": round(model, 2), "decode_ceiling": round(decode, 2),
                           "ceiling": round(ceiling, 2), "end_to_end": round(end_to_end, 2),
                           "end_to_end_over_ceiling": round(end_to_end / ceiling, 3),
                           "end_to_end_over_model_ceiling": round(end_to_end / model, 3)})
        middle = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        naive = self._naive(codec, stage, shards) if cfg.naive else None
        result: dict[str, Any] = {
            "codec": cfg.codec,
            "weights": weights_label,
            "device": _device_name(device),
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "decode_workers": workers,
            "batch_seconds": batch_seconds,
            "precision": cfg.precision,
            "compile": cfg.compile,
            "batching": cfg.batching,
            "corpus_files": len(windows),
            "corpus_audio_seconds": round(audio_seconds, 1),
            **middle,  # the medians of the rounds' figures (ratios: the median of each round's own)
            "naive": round(naive, 2) if naive else None,
            "end_to_end_over_naive": round(middle["end_to_end"] / naive, 3) if naive else None,
            "rounds": rounds,
            **batching,
            "peak_rss_mb": round(rss, 1),
            "decoder_peak_rss_mb": round(decoder_rss, 1),
            "date": time.strftime("%Y-%m-%d"),
        }
        if stage.any_lengths:  # batches of any lengths: the share of codes equal to one-length batches'
            # (1.0 for the masked codecs, whose codes are exact; what --batching padded changes for the others)
            exact = self._batches(stage, windows, exact=True)
            result["identical_codes_vs_exact"] = identical_share(batches, reference, exact,
                                                                 self._model_ceiling(stage, exact)[1])
        if cfg.agreement:
            result["agreement"] = self._agreement(codec, batch_seconds, batches, reference, device)
            if not stage.any_lengths:
                result["agreement"]["padded"] = self._padded_agreement(stage, windows, batches, reference)
        return result

    def _stage(self, codec, batch_seconds: float, precision: str, compile: bool):
        from audiomill.stages.tokenize import TokenizeStage

        return TokenizeStage(codec, self.cfg.chunk_seconds, self.cfg.overlap_seconds, batch_seconds,
                             precision=precision, compile=compile, batching=self.cfg.batching)

    def _warm_up(self, stage) -> None:
        """A short clip twice (lazy initialisation), then one batch as large as the budget allows.

        The large batch grows the model's memory (glibc's heap on a CPU, the caching allocator on a
        GPU) to its working size once, before anything is timed: otherwise the end-to-end run, timed
        first, paid that growth alone (tiny DAC 24 kHz, 120 s batches: its first batch took 3.3-3.6 s
        against 1.7-2.3 s in the model ceiling), a cost a long run pays once."""
        rate = stage.codec.sample_rate
        rng = np.random.default_rng(0)
        clip = rng.standard_normal(rate).astype(np.float32) * 0.1
        for _ in range(2):
            stage.encode_arrays([clip])
        budget = stage.batcher.max_samples
        length = min(stage.window or budget, budget)
        clips = max(1, budget // length)
        stage.encode_arrays([rng.standard_normal(length).astype(np.float32) * 0.1 for _ in range(clips)])
        _synchronize(stage)

    def _end_to_end(self, stage, shards, workers) -> tuple[float, float, float, float]:
        from audiomill.runner.shard import ShardProcessor
        from audiomill.stages.batched import BatchCounts
        from audiomill.runner.state import OutputFolder

        out = os.path.join(self.work, "tokens")
        shutil.rmtree(out, ignore_errors=True)
        folder = OutputFolder(out)
        folder.create()
        reset_peak_rss()
        stage.counts = BatchCounts()
        started = time.perf_counter()
        processor = ShardProcessor(folder, stage, workers, holder="bench")
        audio_seconds = 0.0
        try:
            for result in processor.run_shards(shards, False, lambda event: None):
                audio_seconds += result.stats.get("audio_seconds", 0.0)
            elapsed = time.perf_counter() - started
            decoder_rss = max((peak_rss_mb(pid) for pid in processor.pool.pids()), default=0.0)
        finally:
            processor.close()
        return audio_seconds / elapsed, audio_seconds, peak_rss_mb(), decoder_rss

    def _decode_ceiling(self, stage, shards, workers) -> tuple[float, dict[int, list[np.ndarray]]]:
        """Decode, resample and window the corpus with all decoders; keep the windows for the model."""
        from audiomill.runner.decode import DecodePool, Task, WindowPlan, task_source
        from audiomill.sources import read_shard

        plan = WindowPlan(stage.sample_rate, stage.window, stage.overlap, stage.alignment,
                          getattr(stage, "featurizer", None))
        started = time.perf_counter()
        pool = DecodePool(workers, [plan])
        windows: dict[int, list[np.ndarray]] = {}
        items, marks = (self.items, self.marks) if self is not None else ({}, {})  # (called bare by a test)
        total = 0
        fed: list[int] = []  # the number of files handed out, once all are

        def feed() -> None:
            # its own thread, as the runner's feeder: a task's pipe can be full while its decoder waits
            # for the ring that only this loop empties (submit waits while every decoder has enough)
            ticket = 0
            try:
                for shard in shards:
                    for item in read_shard(shard):
                        if item.error is None:
                            windows[ticket] = []
                            items[ticket], marks[ticket] = item, []
                            pool.submit(Task(ticket, task_source(item), item.offset, item.duration))
                            ticket += 1
            finally:
                fed.append(ticket)

        feeder = threading.Thread(target=feed, name="audiomill-bench-feeder", daemon=True)
        feeder.start()
        try:
            finished = 0
            while not fed or finished < fed[0]:
                message = pool.get(timeout=0.05)
                if message is None or message[0] == "begin":
                    continue
                if message[0] == "done":
                    finished += 1
                    continue
                if message[0] == "error":
                    finished += 1
                    windows.pop(message[1], None)
                    continue
                _, number, _, window, samples, last, num_samples = message
                windows[number].append(samples)
                marks[number].append((window, num_samples if last else 0))
                if last:
                    total += num_samples
            elapsed = time.perf_counter() - started
        finally:
            pool.close()
        return total / stage.sample_rate / elapsed, windows

    def _batches(self, stage, windows: dict[int, list[np.ndarray]], exact: bool = False,
                 key=None) -> list[list[np.ndarray]]:
        """The windows batched as the stage batches them (``exact``: as exact batching would; ``key``:
        by this batch key instead)."""
        from audiomill.batching import DurationBatcher, Piece

        key = key or (stage.codec.batch_key if exact else stage.batch_key)
        batcher = DurationBatcher(stage.batcher.max_samples, max_padding=stage.batcher.max_padding)
        batches: list[list[np.ndarray]] = []
        for ticket, pieces in windows.items():
            for number, samples in enumerate(pieces):
                for batch in batcher.add(Piece(ticket, number, samples, key(len(samples)))):
                    batches.append([p.samples for p in batch])
        batches.extend([p.samples for p in batch] for batch in batcher.flush())
        return batches

    def _model_ceiling(self, stage, batches) -> tuple[float, list[list[list[np.ndarray]]]]:
        samples = sum(len(clip) for batch in batches for clip in batch)
        started = time.perf_counter()
        # codes stay on the device until the end: on a GPU nothing waits for a batch to come back
        on_device = [stage.encode_tensors(*stage.prepare(batch)) for batch in batches]
        _synchronize(stage)
        elapsed = time.perf_counter() - started
        codes = [stage.unbatch(batch, levels) for batch, levels in zip(batches, on_device)]
        return samples / stage.codec.sample_rate / elapsed, codes

    def _naive(self, codec, stage, shards) -> float:
        """One file at a time: read, decode on this thread, encode each window alone."""
        import torch

        from audiomill.audio import decode
        from audiomill.chunking import plan_windows
        from audiomill.errors import DecodeError
        from audiomill.runner.decode import task_source
        from audiomill.sources import read_shard

        total = 0
        started = time.perf_counter()
        for shard in shards:
            for item in read_shard(shard):
                if item.error is not None:
                    continue
                try:
                    audio = decode(task_source(item), codec.sample_rate, item.offset, item.duration)
                except DecodeError:
                    continue
                for window in plan_windows(len(audio.samples), stage.window, stage.overlap, codec.alignment):
                    samples = audio.samples[window.start : window.end]
                    with torch.inference_mode():
                        codes = codec.encode(torch.from_numpy(samples)[None], torch.tensor([len(samples)]))
                    [level.cpu() for level in codes]
                total += len(audio.samples)
        return total / codec.sample_rate / (time.perf_counter() - started)

    def _agreement(self, codec, batch_seconds, batches, reference, device) -> dict[str, Any]:
        """Share of codes identical to fp32 eager, and speed, for each speed option."""
        options: list[tuple[str, str, bool]] = [("bf16", "bf16", False), ("fp16", "fp16", False),
                                                 ("compile", "fp32", True)]
        if device.startswith("cuda"):
            options.insert(0, ("tf32", "tf32", False))
        report: dict[str, Any] = {}
        for label, precision, compile in options:
            try:
                stage = self._stage(codec, batch_seconds, precision, compile)
                self._warm_up(stage)
                if compile:  # compile every batch shape once, outside the timing
                    for batch in batches:
                        stage.encode_arrays(batch)
                speed, codes = self._model_ceiling(stage, batches)
            except Exception as exc:  # an option this device cannot run is reported, not fatal
                report[label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                continue
            finally:
                if device.startswith("cuda"):
                    import torch

                    torch.backends.cuda.matmul.allow_tf32 = False
                    torch.backends.cudnn.allow_tf32 = False
            same = count = 0
            for batch_ref, batch_codes in zip(reference, codes):
                for clip_ref, clip_codes in zip(batch_ref, batch_codes):
                    for level_ref, level_codes in zip(clip_ref, clip_codes):
                        same += int(np.count_nonzero(level_ref == level_codes))
                        count += level_ref.size
            report[label] = {"identical_codes": round(same / max(1, count), 6), "model_speed": round(speed, 2)}
        return report


    def _padded_agreement(self, stage, windows, batches, reference) -> dict[str, Any]:
        """``--batching padded``: every window batched with every other (sorted, padding bounded as
        usual), unmasked; the share of its codes identical to the exact batches', its speed and how
        full its batches are."""
        padded = self._batches(stage, windows, key=lambda length: 0)
        speed, codes = self._model_ceiling(stage, padded)
        return {"identical_codes": identical_share(padded, codes, batches, reference), "model_speed": round(speed, 2),
                "mean_batch_clips": round(sum(len(b) for b in padded) / max(1, len(padded)), 2)}


def identical_share(batches, codes, exact_batches, exact_codes) -> float:
    """The share of codes in ``codes`` (per batch, per clip) equal to the same clip's in ``exact_codes``
    (clips are the same window arrays, batched otherwise)."""
    exact = {id(clip): clip_codes for batch, batch_codes in zip(exact_batches, exact_codes)
             for clip, clip_codes in zip(batch, batch_codes)}
    same = count = 0
    for batch, batch_codes in zip(batches, codes):
        for clip, clip_codes in zip(batch, batch_codes):
            for level_ref, level_codes in zip(exact[id(clip)], clip_codes):
                same += int(np.count_nonzero(level_ref == level_codes))
                count += level_ref.size
    return round(same / max(1, count), 6)


def _synchronize(stage) -> None:
    if stage.device.type == "cuda":
        import torch

        torch.cuda.synchronize(stage.device)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    import platform

    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({model or platform.processor() or 'unknown'})"


def _bench_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return device if device == "cpu" or device.startswith("cuda") else f"cuda:{device}"


def _memory_line(result: dict[str, Any]) -> str:
    return f"  peak RSS: worker {result['peak_rss_mb']:.0f} MB, each decoder {result['decoder_peak_rss_mb']:.0f} MB"


def format_transcribe_report(result: dict[str, Any]) -> str:
    lines = [f"audiomill bench --stage {result['stage']}: {result['backend']} ({result['weights']}) on "
             f"{result['device']}, "
             f"{result['corpus_files']} files, {result['corpus_audio_seconds']:.0f} s of audio, {result['date']}",
             f"  decode workers {result['decode_workers']}, batches of {result['batch_seconds']:g} s, "
             f"{result['precision']}", "", f"  {'':<16}{'audio s / wall s':>18}"]
    for label, name in (("model ceiling", "model_ceiling"), ("decode ceiling", "decode_ceiling"),
                        ("ceiling", "ceiling"), ("end to end", "end_to_end"), ("naive loop", "naive")):
        if result.get(name) is not None:
            lines.append(f"  {label:<16}{result[name]:>18.1f}")
    lines += ["", f"  end to end / ceiling        {result['end_to_end_over_ceiling']:.2f}"]
    if result.get("naive"):
        lines.append(f"  end to end / naive          {result['end_to_end_over_naive']:.2f}")
    lines.append(f"  batches: {result['mean_batch_clips']:.2f} clips a model call on average ({result['model_calls']} "
                 f"calls), padding {100 * result['padding_fraction']:.1f} % of the audio")
    lines.append(_memory_line(result))
    return "\n".join(lines)


def _rounds_report(result: dict[str, Any], title: str, worker: str, rows: list[tuple[str, str]],
                   ratio: str) -> str:
    """A CPU stage's table: figures in audio s / wall s, the ratio of end to end with its rounds."""
    ratios = [f"{r['end_to_end_over_ceiling']:.2f}" for r in result.get("rounds", ())]
    rounds = f"   (median of {len(ratios)} rounds: {', '.join(ratios)})" if len(ratios) > 1 else ""
    return "\n".join([
        f"audiomill bench --stage {title} on {result['device']}, {result['corpus_files']} files, "
        f"{result['corpus_audio_seconds']:.0f} s of audio, {result['date']}",
        f"  decode workers {result['decode_workers']}, {worker}", "", f"  {'':<16}{'audio s / wall s':>18}",
        *[f"  {label:<16}{result[name]:>18.1f}" for label, name in rows], "",
        f"  {ratio}  {result['end_to_end_over_ceiling']:.2f}" + rounds, _memory_line(result)])


def format_vad_report(result: dict[str, Any]) -> str:
    return _rounds_report(result, f"vad: {result['backend']}", "one VAD worker",
                          [("VAD ceiling", "vad_ceiling"), ("decode ceiling", "decode_ceiling"),
                           ("end to end", "end_to_end")], "end to end / min(VAD, decode)")


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"audiomill bench: {result['codec']} ({result['weights']}) on {result['device']}, "
        f"{result['corpus_files']} files, {result['corpus_audio_seconds']:.0f} s of audio, {result['date']}",
        f"  decode workers {result['decode_workers']}, torch threads {result['torch_threads']}, "
        f"batches of {result['batch_seconds']:g} s, {result['precision']}{', compiled' if result['compile'] else ''}",
        "",
        f"  {'':<16}{'audio s / wall s':>18}" + (f"   (medians of {len(result['rounds'])} rounds)"
                                                if len(result["rounds"]) > 1 else ""),
        f"  {'model ceiling':<16}{result['model_ceiling']:>18.1f}",
        f"  {'decode ceiling':<16}{result['decode_ceiling']:>18.1f}",
        f"  {'ceiling':<16}{result['ceiling']:>18.1f}",
        f"  {'end to end':<16}{result['end_to_end']:>18.1f}",
    ]
    if result.get("naive"):
        lines.append(f"  {'naive loop':<16}{result['naive']:>18.1f}")
    lines += [
        "",
        f"  end to end / ceiling        {result['end_to_end_over_ceiling']:.2f}",
        f"  end to end / model ceiling  {result['end_to_end_over_model_ceiling']:.2f}",
    ]
    if result.get("naive"):
        lines.append(f"  end to end / naive          {result['end_to_end_over_naive']:.2f}")
    lines.append(f"  batches: {result['mean_batch_clips']:.2f} clips a model call on average ({result['model_calls']} "
                 f"calls), padding {100 * result['padding_fraction']:.1f} % and repair "
                 f"{100 * result['repair_fraction']:.1f} % of the audio")
    if "identical_codes_vs_exact" in result:
        lines.append(f"  batches of any lengths: {100 * result['identical_codes_vs_exact']:.3f} % of the codes equal "
                     f"those of batches of one length")
    lines.append(_memory_line(result))
    for label, figures in result.get("agreement", {}).items():
        if "error" in figures:
            lines.append(f"  {label:<8} not available here: {figures['error']}")
        else:
            full = f", {figures['mean_batch_clips']:.1f} clips a batch" if "mean_batch_clips" in figures else ""
            lines.append(f"  {label:<8} identical codes {100 * figures['identical_codes']:.3f} %, "
                         f"model {figures['model_speed']:.1f} audio s / wall s{full}")
    return "\n".join(lines)


def _setting_pair(text: str) -> tuple[str, Any]:
    """``--set KEY=VALUE``: the value as TOML reads it (2, true, "x"), else as the string."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text!r}: expected KEY=VALUE")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def format_kind_report(result: dict[str, Any]) -> str:
    return _rounds_report(result, result["stage"], "one stage worker",
                          [("stage ceiling", "stage_ceiling"), ("decode ceiling", "decode_ceiling"),
                           ("ceiling", "ceiling"), ("end to end", "end_to_end")], "end to end / ceiling")


def run_bench(cfg: BenchConfig) -> int:
    result = Bench(cfg).run()
    report = {"vad": format_vad_report, "transcribe": format_transcribe_report,
              "prepare-tts": format_transcribe_report, "tokenize": format_report}.get(result.get("stage") or "tokenize",
                                                                                     format_kind_report)
    print(json.dumps(result) if cfg.json else report(result))
    return 0

