"""The batch budget of a GPU worker, found from free memory by one probe and remembered.

The probe encodes a few seconds of audio and measures the peak memory it took; the
budget is the audio that fits in 60 % of the memory free at start, as encoder
memory grows linearly with the padded audio in a batch. The figure is remembered
per codec, GPU model, memory size and precision in
``$XDG_CACHE_HOME/audiomill/batch-budget.json``, so later runs skip the probe.
An out-of-memory later on still halves the batch (see the tokenize stage).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

PROBE_SECONDS = 8.0
PROBE_CLIPS = 4
SHARE_OF_FREE = 0.6
MIN_SECONDS, MAX_SECONDS = 8.0, 3600.0


def cache_path() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "audiomill", "batch-budget.json")


# CPU batches only cost memory: over 600 files, peak RSS 477 MB at 10 s, 861 MB at 20 s, and no faster.
CPU_BATCH_SECONDS = 10.0


def batch_budget(stage, device: str) -> float:
    """Seconds of padded audio per batch: probed from free memory on a GPU, fixed on CPU."""
    return probe_batch_seconds(stage) if device.startswith("cuda") else CPU_BATCH_SECONDS


def probe_batch_seconds(stage) -> float:
    import torch

    device = stage.device
    props = torch.cuda.get_device_properties(device)
    key = f"{stage.name}|{props.name}|{props.total_memory}|{stage.precision}|{stage.window}"
    cached = _read_cache().get(key)
    if cached:
        log.info("batch budget %.0f s (remembered for %s on %s)", cached, stage.name, props.name)
        return float(cached)
    rate = stage.sample_rate
    clip = (0.1 * np.random.default_rng(0).standard_normal(int(PROBE_SECONDS * rate))).astype(np.float32)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    stage.encode_arrays([clip] * PROBE_CLIPS)
    torch.cuda.synchronize(device)
    used = max(1, torch.cuda.max_memory_allocated(device) - before)
    per_second = used / (PROBE_SECONDS * PROBE_CLIPS)
    seconds = float(min(MAX_SECONDS, max(MIN_SECONDS, SHARE_OF_FREE * free / per_second)))
    torch.cuda.empty_cache()
    log.info("batch budget %.0f s: the probe took %.1f MB per second of audio, %.1f GB free on %s",
             seconds, per_second / 2**20, free / 2**30, props.name)
    cache = _read_cache()
    cache[key] = round(seconds, 1)
    _write_cache(cache)
    return seconds


def _read_cache() -> dict:
    try:
        with open(cache_path(), encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(data: dict) -> None:
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home only costs a probe next time
        log.debug("cannot remember the batch budget: %s", exc)
