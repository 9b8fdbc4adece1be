"""``bench --stage tokenize`` (the default): a codec's model ceiling (its encode of pre-decoded, pre-batched
windows, the very batches audiomill forms), the decode ceiling, ``audiomill tokenize`` end to end, and the
naive loop (one file at a time, decoded on the main thread, encoded window by window at batch size one);
with ``--agreement``, the share of codes each speed option keeps identical to fp32."""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

import numpy as np

from audiomill.bench.harness import (Bench, batches_of, ceiling, common, medians, memory_line, synchronize,
                                     with_naive)


def _weights(bench: Bench, info) -> tuple[str | None, str]:
    """The weights to load and how the report names them."""
    from audiomill.codecs import resolve_weights

    cfg = bench.cfg
    if cfg.tiny:
        module = importlib.import_module(info.module)
        return module.save_tiny(info, os.path.join(bench.work, "tiny-model")), "tiny random config"
    if cfg.model_path:
        return resolve_weights(info, cfg.model_path), cfg.model_path
    return None, "full-size random weights"


def measure(bench: Bench) -> dict[str, Any]:
    import torch

    from audiomill.codecs import codec_info, load_codec
    from audiomill.runner.local import limit_kernel_cache, parse_devices
    from audiomill.stages.budget import CPU_BATCH_SECONDS, batch_budget

    cfg = bench.cfg
    info = codec_info(cfg.codec)
    device = parse_devices(cfg.device)[0]
    limit_kernel_cache(device)
    weights, weights_label = _weights(bench, info)
    shards = bench.shards()
    workers = bench.decode_workers(device)
    codec = load_codec(cfg.codec, weights, device)
    stage = _stage(cfg, codec, cfg.batch_seconds or CPU_BATCH_SECONDS, cfg.precision, cfg.compile)
    batch_seconds = cfg.batch_seconds or batch_budget(stage, device)
    stage.set_batch_seconds(batch_seconds)
    _warm_up(stage)
    rounds, rss, decoder_rss = [], 0.0, 0.0
    for _ in range(max(1, cfg.repeat)):  # side by side in time: the machine's speed drifts between runs
        windows = batches = reference = None  # (not held through this round's end to end)
        end_to_end, audio_seconds, round_rss, round_decoder_rss = bench.end_to_end(stage, shards, workers)
        rss, decoder_rss = max(rss, round_rss), max(decoder_rss, round_decoder_rss)
        batching = stage.counts.summary()  # of the end-to-end run
        decode, windows = bench.decode_ceiling(stage, shards, workers)
        batches = batches_of(stage, windows)
        model, reference = model_ceiling(stage, batches)
        both = ceiling(model, decode, device)
        rounds.append({"model_ceiling": round(model, 2), "decode_ceiling": round(decode, 2),
                       "ceiling": round(both, 2), "end_to_end": round(end_to_end, 2),
                       "end_to_end_over_ceiling": round(end_to_end / both, 3),
                       "end_to_end_over_model_ceiling": round(end_to_end / model, 3)})
    result: dict[str, Any] = {
        "codec": cfg.codec, "weights": weights_label, **common(device, workers, len(windows), audio_seconds, rss,
                                                               decoder_rss),
        "torch_threads": torch.get_num_threads(), "batch_seconds": batch_seconds, "precision": cfg.precision,
        "compile": cfg.compile, "batching": cfg.batching,
        **medians(rounds),  # the medians of the rounds' figures (ratios: the median of each round's own)
        "rounds": rounds, **batching}
    with_naive(result, _naive(codec, stage, shards) if cfg.naive else None)
    if stage.any_lengths:  # batches of any lengths: the share of codes equal to one-length batches'
        # (1.0 for the masked codecs, whose codes are exact; what --batching padded changes for the others)
        exact = batches_of(stage, windows, key=stage.codec.batch_key)
        result["identical_codes_vs_exact"] = identical_share(batches, reference, exact,
                                                             model_ceiling(stage, exact)[1])
    if cfg.agreement:
        result["agreement"] = _agreement(cfg, codec, batch_seconds, batches, reference, device)
        if not stage.any_lengths:
            result["agreement"]["padded"] = _padded_agreement(stage, windows, batches, reference)
    return result


def _stage(cfg, codec, batch_seconds: float, precision: str, compile: bool):
    from audiomill.stages.tokenize import TokenizeStage

    return TokenizeStage(codec, cfg.chunk_seconds, cfg.overlap_seconds, batch_seconds,
                         precision=precision, compile=compile, batching=cfg.batching)


def _warm_up(stage) -> None:
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
    synchronize(stage)


def model_ceiling(stage, batches) -> tuple[float, list[list[list[np.ndarray]]]]:
    samples = sum(len(clip) for batch in batches for clip in batch)
    started = time.perf_counter()
    # codes stay on the device until the end: on a GPU nothing waits for a batch to come back
    on_device = [stage.encode_tensors(*stage.prepare(batch)) for batch in batches]
    synchronize(stage)
    elapsed = time.perf_counter() - started
    codes = [stage.unbatch(batch, levels) for batch, levels in zip(batches, on_device)]
    return samples / stage.codec.sample_rate / elapsed, codes


def _naive(codec, stage, shards) -> float:
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


def _agreement(cfg, codec, batch_seconds, batches, reference, device) -> dict[str, Any]:
    """Share of codes identical to fp32 eager, and speed, for each speed option."""
    options: list[tuple[str, str, bool]] = [("bf16", "bf16", False), ("fp16", "fp16", False),
                                             ("compile", "fp32", True)]
    if device.startswith("cuda"):
        options.insert(0, ("tf32", "tf32", False))
    report: dict[str, Any] = {}
    for label, precision, compile in options:
        try:
            stage = _stage(cfg, codec, batch_seconds, precision, compile)
            _warm_up(stage)
            if compile:  # compile every batch shape once, outside the timing
                for batch in batches:
                    stage.encode_arrays(batch)
            speed, codes = model_ceiling(stage, batches)
        except Exception as exc:  # an option this device cannot run is reported, not fatal
            report[label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            continue
        finally:
            if device.startswith("cuda"):
                import torch

                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
        report[label] = {"identical_codes": identical_share(batches, codes, batches, reference),
                         "model_speed": round(speed, 2)}
    return report


def _padded_agreement(stage, windows, batches, reference) -> dict[str, Any]:
    """``--batching padded``: every window batched with every other (sorted, padding bounded as usual),
    unmasked; the share of its codes identical to the exact batches', its speed and how full its batches
    are."""
    padded = batches_of(stage, windows, key=lambda length: 0)
    speed, codes = model_ceiling(stage, padded)
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


def report(result: dict[str, Any]) -> str:
    lines = [
        f"audiomill bench: {result['codec']} ({result['weights']}) on {result['device']}, "
        f"{result['corpus_files']} files, {result['corpus_audio_seconds']:.0f} s of audio, {result['date']}",
        f"  decode workers {result['decode_workers']}, torch threads {result['torch_threads']}, "
        f"batches of {result['batch_seconds']:g} s, {result['precision']}{', compiled' if result['compile'] else ''}",
        "",
        f"  {'':<16}{'audio s / wall s':>18}" + (f"   (medians of {len(result['rounds'])} rounds)"
                                                if len(result["rounds"]) > 1 else ""),
        *[f"  {label:<16}{result[name]:>18.1f}" for label, name in (
            ("model ceiling", "model_ceiling"), ("decode ceiling", "decode_ceiling"), ("ceiling", "ceiling"),
            ("end to end", "end_to_end"), ("naive loop", "naive")) if result.get(name)],
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
    lines.append(memory_line(result))
    for label, figures in result.get("agreement", {}).items():
        if "error" in figures:
            lines.append(f"  {label:<8} not available here: {figures['error']}")
        else:
            full = f", {figures['mean_batch_clips']:.1f} clips a batch" if "mean_batch_clips" in figures else ""
            lines.append(f"  {label:<8} identical codes {100 * figures['identical_codes']:.3f} %, "
                         f"model {figures['model_speed']:.1f} audio s / wall s{full}")
    return "\n".join(lines)
