"""What every stage's bench shares: the corpus, the decode ceiling, the end-to-end run, the stage alone on
pre-decoded windows, the naive loop's decoding, memory peaks, and the reports' common lines."""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from typing import Any, Callable

import numpy as np

from audiomill.corpus import encode_audio, speech, write_tar

log = logging.getLogger("audiomill.bench")

BENCH_FORMATS = ("mp3", "flac", "wav")  # MP3 44.1 kHz stereo, FLAC 48 kHz, WAV 16 kHz


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
    """One bench's corpus and work folder, and the measurements every stage's bench makes."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.work = cfg.work_dir or tempfile.mkdtemp(prefix="audiomill-bench-")
        self.owns_work = cfg.work_dir is None
        # the decode ceiling's files and windows (kept beside the samples, for a stage of one's own)
        self.items: dict[int, Any] = {}
        self.marks: dict[int, list[tuple[Any, int]]] = {}

    def run(self, measure: Callable[[Bench], dict[str, Any]]) -> dict[str, Any]:
        try:
            return measure(self)
        finally:
            if self.owns_work:
                shutil.rmtree(self.work, ignore_errors=True)

    def shards(self):
        from audiomill.sources.discover import discover_shards

        cfg = self.cfg
        if cfg.corpus:
            return discover_shards(cfg.corpus, files_per_shard=1000)
        log.info("bench: making %.0f s of speech (longest file %.0f s)", cfg.corpus_seconds, cfg.longest_seconds)
        paths = make_corpus(os.path.join(self.work, "corpus"), cfg.corpus_seconds, cfg.longest_seconds)
        return discover_shards(paths, files_per_shard=1000)

    def decode_workers(self, device: str) -> int:
        from audiomill.runner.local import default_decode_workers

        return self.cfg.decode_workers or default_decode_workers(device, 1)

    def end_to_end(self, stage, shards, workers) -> tuple[float, float, float, float]:
        """The runner over the corpus: audio s / wall s, audio seconds, and the worker's and a decoder's
        peak RSS (MB)."""
        from audiomill.runner.shard import ShardProcessor
        from audiomill.runner.state import OutputFolder
        from audiomill.stages.batched import BatchCounts

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

    def decode_ceiling(self, stage, shards, workers) -> tuple[float, dict[int, list[np.ndarray]]]:
        """Decode, resample and window the corpus with all decoders; keep the windows for the model."""
        from audiomill.runner.decode import DecodePool, Task, WindowPlan, task_source
        from audiomill.sources import read_shard

        plan = WindowPlan(stage.sample_rate, stage.window, stage.overlap, stage.alignment,
                          getattr(stage, "featurizer", None))
        started = time.perf_counter()
        pool = DecodePool(workers, [plan])
        windows: dict[int, list[np.ndarray]] = {}
        items, marks = (self.items, self.marks) if self is not None else ({}, {})  # (called bare by a test)
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
            total = _collect(pool, fed, windows, marks)
            elapsed = time.perf_counter() - started
        finally:
            pool.close()
        return total / stage.sample_rate / elapsed, windows

    def stage_ceiling(self, stage, windows: dict[int, list[np.ndarray]]) -> float:
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

    def decoded_one_by_one(self, shards, rate: int):
        """The naive loop's input: each file decoded on this thread, one after the other."""
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


def _collect(pool, fed: list[int], windows: dict, marks: dict) -> int:
    """The decoders' windows until every file handed out is done; the samples of the files decoded."""
    total = finished = 0
    while not fed or finished < fed[0]:
        message = pool.get(timeout=0.05)
        if message is None or message[0] == "begin":
            continue
        if message[0] in ("done", "error"):
            finished += 1
            if message[0] == "error":
                windows.pop(message[1], None)
            continue
        _, number, _, window, samples, last, num_samples = message
        windows[number].append(samples)
        marks[number].append((window, num_samples if last else 0))
        if last:
            total += num_samples
    return total


def batches_of(stage, windows: dict[int, list[np.ndarray]], key=None) -> list[list[np.ndarray]]:
    """The windows batched as the stage batches them (``key``: by this batch key instead of the stage's)."""
    from audiomill.batching import DurationBatcher, Piece

    key = key or stage.batch_key
    batcher = DurationBatcher(stage.batcher.max_samples, max_padding=stage.batcher.max_padding)
    batches: list[list[np.ndarray]] = []
    for ticket, pieces in windows.items():
        for number, samples in enumerate(pieces):
            for batch in batcher.add(Piece(ticket, number, samples, key(len(samples)))):
                batches.append([p.samples for p in batch])
    batches.extend([p.samples for p in batch] for batch in batcher.flush())
    return batches


def ceiling(model: float, decode: float, device: str) -> float:
    """min(model, decode) on an accelerator; 1/(1/model + 1/decode) when both share the CPU."""
    return min(model, decode) if device.startswith("cuda") else 1.0 / (1.0 / model + 1.0 / decode)


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (a ratio: the median of each round's own)."""
    return {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}


def common(device: str, workers: int, files: int, audio_seconds: float, rss: float,
           decoder_rss: float) -> dict[str, Any]:
    """The figures every stage's result carries: the machine, the corpus and the memory peaks."""
    return {"device": device_name(device), "cpu_cores": os.cpu_count(), "decode_workers": workers,
            "corpus_files": files, "corpus_audio_seconds": round(audio_seconds, 1), "peak_rss_mb": round(rss, 1),
            "decoder_peak_rss_mb": round(decoder_rss, 1), "date": time.strftime("%Y-%m-%d")}


def with_naive(result: dict[str, Any], naive: float | None) -> dict[str, Any]:
    if naive is not None:
        result.update(naive=round(naive, 2), end_to_end_over_naive=round(result["end_to_end"] / naive, 2))
    return result


def synchronize(stage) -> None:
    if stage.device.type == "cuda":
        import torch

        torch.cuda.synchronize(stage.device)


def device_name(device: str) -> str:
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


def bench_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return device if device == "cpu" or device.startswith("cuda") else f"cuda:{device}"


# -- reports -------------------------------------------------------------------------------------

def memory_line(result: dict[str, Any]) -> str:
    return f"  peak RSS: worker {result['peak_rss_mb']:.0f} MB, each decoder {result['decoder_peak_rss_mb']:.0f} MB"


def model_report(result: dict[str, Any]) -> str:
    """A model stage's table (transcribe, prepare-tts): ceilings, end to end, naive, batches, memory."""
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
    lines.append(memory_line(result))
    return "\n".join(lines)


def rounds_report(result: dict[str, Any], title: str, worker: str, rows: list[tuple[str, str]],
                  ratio: str) -> str:
    """A CPU stage's table: figures in audio s / wall s, the ratio of end to end with its rounds."""
    ratios = [f"{r['end_to_end_over_ceiling']:.2f}" for r in result.get("rounds", ())]
    rounds = f"   (median of {len(ratios)} rounds: {', '.join(ratios)})" if len(ratios) > 1 else ""
    return "\n".join([
        f"audiomill bench --stage {title} on {result['device']}, {result['corpus_files']} files, "
        f"{result['corpus_audio_seconds']:.0f} s of audio, {result['date']}",
        f"  decode workers {result['decode_workers']}, {worker}", "", f"  {'':<16}{'audio s / wall s':>18}",
        *[f"  {label:<16}{result[name]:>18.1f}" for label, name in rows], "",
        f"  {ratio}  {result['end_to_end_over_ceiling']:.2f}" + rounds, memory_line(result)])
