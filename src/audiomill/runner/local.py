"""The local executor: one worker per device (GPU, or ``cpu:N`` CPU workers), whole shards each.

Shards are handed out from a shared queue, so a slow shard never idles the other
workers. Every shard is locked while written (see :mod:`audiomill.runner.state`),
so even two runs started at once on the same output never write the same shard.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import traceback
from typing import Any

from audiomill.config import RunConfig
from audiomill.errors import DiskFull, UsageError
from audiomill.items import Shard
from audiomill.runner.shard import ShardResult
from audiomill.runner.process import Stop, die_with_parent, stop_on_signals
from audiomill.runner.state import OutputFolder

log = logging.getLogger(__name__)


def parse_devices(spec: str) -> list[str]:
    """``auto``/``all`` (every GPU, else one CPU worker), ``cpu``, ``cpu:N``, ``0,1,3``, ``cuda:1``."""
    spec = spec.strip().lower()
    if spec in ("auto", "all"):
        count = _cuda_count()
        if count == 0:
            if spec == "all":
                log.info("no GPU visible: running one CPU worker")
            return ["cpu"]
        return [f"cuda:{i}" for i in range(count)]
    if spec == "cpu":
        return ["cpu"]
    if spec.startswith("cpu:"):
        try:
            count = int(spec[4:])
        except ValueError:
            raise UsageError(f"--devices {spec}: expected cpu:N with N a number") from None
        if count < 1:
            raise UsageError("--devices cpu:N needs N >= 1")
        return ["cpu"] * count
    devices = []
    for part in spec.split(","):
        part = part.strip().removeprefix("cuda:")
        if not part.isdigit():
            raise UsageError(f"--devices {spec}: expected all, cpu, cpu:N or GPU indices such as 0,1,3")
        devices.append(f"cuda:{part}")
    count = _cuda_count()
    missing = [d for d in devices if int(d[5:]) >= count]
    if missing:
        raise UsageError(f"--devices {spec}: {count} GPU(s) visible, no {', '.join(missing)}")
    return devices


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def build_processor(cfg: RunConfig, device: str, holder: str, threads: int, workers_on_node: int = 1):
    """The stages of the plan on ``device``, and the decode pool that feeds them."""
    import torch

    from audiomill.runner.shard import ShardProcessor, StageOutput
    from audiomill.stages import stage_class

    if threads > 0:
        torch.set_num_threads(threads)
    limit_kernel_cache(device)
    outputs = [StageOutput(stage_class(o.kind).build(o.settings, device), o.group) for o in cfg.outputs]
    workers = cfg.decode_workers or default_decode_workers(device, workers_on_node)
    return ShardProcessor(OutputFolder(cfg.out), outputs, workers, holder, cfg.output_format)


def limit_kernel_cache(device: str) -> None:
    """oneDNN keeps a compiled kernel per input shape (1024 by default), and batch shapes vary
    endlessly: on CPU that alone grew peak RSS by half over 2,000 files, for no speed."""
    if device == "cpu":
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def available_cpus() -> int:
    """Cores this process may use: its SLURM allocation on a shared node, else its CPU affinity."""
    allocated = os.environ.get("SLURM_CPUS_ON_NODE", "")
    if allocated.isdigit() and int(allocated) > 0:
        return int(allocated)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_decode_workers(device: str, workers_on_node: int) -> int:
    """A GPU worker gets its share of the cores (up to 8); a CPU worker, whose model needs the
    cores itself, one decoder per two cores (decoding is ~20x faster than a CPU model)."""
    cores = max(1, available_cpus() // max(1, workers_on_node))
    if device.startswith("cuda"):
        return max(1, min(8, cores - 1))
    return max(1, cores // 2)


def run_local(
    cfg: RunConfig, shards: list[Shard], on_event, stop: threading.Event | None = None, holder: str = "",
) -> tuple[list[ShardResult], list[str]]:
    """Run ``shards``; returns the results and the crash reports of workers that died.

    ``stop`` ends the run early but cleanly: each worker writes the batch it is encoding and
    leaves its shards resumable. ``holder`` names this run in the shard locks (a SLURM task, say).
    """
    devices = parse_devices(cfg.devices)
    cpu_workers = sum(1 for d in devices if d == "cpu")
    cpus = available_cpus()
    threads = max(1, cpus // max(1, cpu_workers)) if cpu_workers > 1 or cpus < (os.cpu_count() or 1) else 0
    holder = holder or f"pid {os.getpid()}"
    if len(devices) == 1:
        return _run_inline(cfg, shards, devices[0], threads, on_event, stop, holder), []
    return _run_processes(cfg, shards, devices, threads, on_event, stop, holder)


def _run_inline(cfg, shards, device, threads, on_event, stop, holder) -> list[ShardResult]:
    processor = build_processor(cfg, device, holder, threads)
    results = []
    try:
        for result in processor.run_shards(shards, cfg.retry_errors, on_event, stop):
            on_event({"event": "shard", "shard": result.name, "status": result.status})
            results.append(result)
        log_batching(processor)
    finally:
        processor.close()
    return results


def log_batching(processor) -> None:
    """How full each stage's model calls were: what --batch-seconds and --max-padding bought."""
    for output in processor.outputs:
        counts = getattr(output.stage, "counts", None)
        if counts is not None and counts.batches:
            figures = counts.summary()
            log.info("%s: %d model calls, %.2f clips each on average, padding %.1f %% of the audio",
                     output.group or output.stage.name, figures["model_calls"], figures["mean_batch_clips"],
                     100 * figures["padding_fraction"])


def _run_processes(cfg, shards, devices, threads, on_event, stop, holder):
    ctx = mp.get_context("spawn")
    todo: Any = ctx.Queue()
    events: Any = ctx.Queue()
    for shard in shards:
        todo.put(shard.to_json())
    for _ in devices:
        todo.put(None)
    workers = [
        ctx.Process(target=_worker_main, args=(i, device, len(devices), cfg.to_json(), threads, todo, events,
                                                    f"{holder} worker {i}"),
                    name=f"audiomill-worker-{i}", daemon=False)
        for i, device in enumerate(devices)
    ]
    for worker in workers:
        worker.start()
    results: list[ShardResult] = []
    crashes: list[str] = []
    full: str | None = None
    finished = 0
    forwarded = False
    while finished < len(workers):
        if stop is not None and stop.is_set() and not forwarded:
            forwarded = True
            for worker in workers:
                if worker.is_alive():
                    os.kill(worker.pid, signal.SIGUSR2)
        try:
            event = events.get(timeout=0.5)
        except queue.Empty:
            for i, worker in enumerate(workers):
                if worker.exitcode not in (None, 0) and not getattr(worker, "_reported", False):
                    worker._reported = True  # type: ignore[attr-defined]
                    crashes.append(f"worker {i} ({devices[i]}) died with exit code {worker.exitcode}")
                    finished += 1
            continue
        kind = event.get("event")
        if kind == "result":
            results.append(ShardResult(event["shard"], event["status"], event.get("stats", {}), event.get("reason", "")))
            on_event({"event": "shard", "shard": event["shard"], "status": event["status"]})
        elif kind == "crash":
            crashes.append(f"worker {event['worker']} ({event['device']}): {event['error']}")
            workers[event["worker"]]._reported = True  # type: ignore[attr-defined]
            finished += 1
        elif kind == "disk_full":
            full = event["out"]
            workers[event["worker"]]._reported = True  # type: ignore[attr-defined]
            finished += 1
            for worker in workers:  # the others stop as they would at a time limit
                if worker.is_alive():
                    os.kill(worker.pid, signal.SIGUSR2)
        elif kind == "exit":
            workers[event["worker"]]._reported = True  # type: ignore[attr-defined]
            finished += 1
        else:
            on_event(event)
    for worker in workers:
        worker.join()
    if full is not None:
        raise DiskFull(full)
    return results, crashes


def _worker_main(index, device, workers_on_node, cfg_json, threads, todo, events, holder) -> None:
    die_with_parent()
    stop = Stop()
    stop_on_signals(stop)
    cfg = RunConfig.from_json(cfg_json)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{index} %(levelname)s %(message)s")
    try:
        processor = build_processor(cfg, device, f"{holder} pid {os.getpid()}", threads, workers_on_node)
        try:
            shards = (Shard.from_json(data) for data in iter(todo.get, None))
            for result in processor.run_shards(shards, cfg.retry_errors, events.put, stop):
                events.put({"event": "result", "shard": result.name, "status": result.status,
                            "stats": result.stats, "reason": result.reason})
            log_batching(processor)
        finally:
            processor.close()
    except DiskFull as exc:  # the parent stops the run, in one line
        events.put({"event": "disk_full", "worker": index, "out": exc.out})
        raise SystemExit(1) from None
    except BaseException as exc:  # report, then die: the parent decides what the run's status is
        events.put({"event": "crash", "worker": index, "device": device,
                    "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})
        raise SystemExit(1) from None
    events.put({"event": "exit", "worker": index})
