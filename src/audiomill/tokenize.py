"""A tokenize run: check everything that can fail fast, freeze the plan, run the shards, report."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import signal
import sys
import time

from audiomill import __version__
from audiomill.config import OUTPUT_FIELDS, TokenizeConfig
from audiomill.errors import UsageError
from audiomill.items import Shard
from audiomill.progress import Progress
from audiomill.runner.state import OutputFolder

log = logging.getLogger("audiomill")


def prepare(cfg: TokenizeConfig) -> tuple[list[Shard], str | None]:
    """Everything that can fail before any work does: inputs, codec, weights, output folder, plan."""
    from audiomill.codecs import codec_info, resolve_weights
    from audiomill.sources.discover import discover_shards

    if cfg.chunk_seconds and cfg.overlap_seconds * 2 >= cfg.chunk_seconds:
        raise UsageError("--overlap-seconds must be less than half of --chunk-seconds")
    if cfg.model_path:
        cfg.model_path = os.path.abspath(cfg.model_path)
    cfg.out = os.path.abspath(cfg.out)
    if cfg.executor != "local" and cfg.retry_errors:
        raise UsageError("--retry-errors works with --executor local only: run it on one node, then go on "
                         f"with --executor {cfg.executor}")
    shards = discover_shards(cfg.inputs, cfg.files_per_shard, cfg.start, cfg.end)
    info = codec_info(cfg.codec)
    unknown = sorted(set(cfg.codec_options) - set(info.options))
    if unknown:
        raise UsageError(f"{cfg.codec} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(info.options) or 'none'}")
    weights_dir = None if cfg.random_weights else resolve_weights(info, cfg.model_path)
    from audiomill.runner.local import parse_devices

    if cfg.executor == "local":  # a cluster's nodes have their own devices
        parse_devices(cfg.devices)
    folder = OutputFolder(cfg.out)
    try:
        folder.create()
    except OSError as exc:
        raise UsageError(f"cannot write to --out {cfg.out}: {exc.strerror}") from None
    if not os.access(cfg.out, os.W_OK):
        raise UsageError(f"cannot write to --out {cfg.out}")
    _freeze_plan(folder, cfg, shards, weights_dir)
    return shards, weights_dir


def _freeze_plan(folder: OutputFolder, cfg: TokenizeConfig, shards: list[Shard], weights_dir: str | None) -> None:
    config = cfg.to_json()
    if folder.exists():
        plan = folder.read_plan()
        for name in OUTPUT_FIELDS:
            spec = TokenizeConfig.__dataclass_fields__[name]
            default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
            old, new = plan["config"].get(name, default), config.get(name)
            if old != new:
                if name == "codec_options":
                    old, new = (",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.items())
                                or "(none)" for o in (old, new))
                flag = "--codec-option" if name == "codec_options" else "--" + name.replace("_", "-")
                raise UsageError(
                    f"{cfg.out} was made with {flag} {old}, not {new}: use another --out, or the same {flag}"
                )
        known = {s["name"]: s for s in plan["shards"]}
        for shard in shards:
            if shard.name in known and Shard.from_json(known[shard.name]) != shard:
                raise UsageError(f"shard {shard.name} of {cfg.out} came from {known[shard.name]['path']}, "
                                 f"not {shard.path}: use another --out")
            known.setdefault(shard.name, shard.to_json())
        plan["shards"] = list(known.values())
        plan["config"] = config  # what writes the output is checked equal above; the rest is this launch's
    else:
        import numpy

        plan = {
            "created": time.time(),
            "config": config,
            "weights": weights_dir or "random",
            "versions": {"audiomill": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
                         **_model_versions()},
            "shards": [s.to_json() for s in shards],
        }
    folder.write_plan(plan)


def _model_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "snac", "soundfile", "soxr", "av"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def tokenize(cfg: TokenizeConfig, slurm=None) -> int:
    """Run ``cfg``; ``slurm`` (a :class:`audiomill.runner.slurm.SlurmOptions`) for --executor slurm."""
    from audiomill.cli import EXIT_FATAL, EXIT_FILE_ERRORS, EXIT_INCOMPLETE, EXIT_OK
    from audiomill.runner.local import Stop, run_local, stop_on_signals

    shards, weights_dir = prepare(cfg)
    if cfg.executor != "local":
        return _launch_cluster(cfg, shards, slurm)
    logs = os.path.join(cfg.out, "_audiomill", "logs")
    handlers = [logging.FileHandler(os.path.join(logs, f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"))]
    if cfg.log_file:
        handlers.append(logging.FileHandler(cfg.log_file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
    if weights_dir is None:
        print(f"audiomill: note: using randomly initialised weights for {cfg.codec}; the codes are meaningless "
              f"(pass --model-path DIR for real ones)", file=sys.stderr)
    log.info("tokenize: %d shards with %s into %s", len(shards), cfg.codec, cfg.out)
    progress = Progress(len(shards), cfg.progress, cfg.log_interval)
    stop = Stop()
    stop_on_signals(stop)  # a TERM or USR2 (a time limit in the user's own sbatch script) stops cleanly
    with progress.logging_redirect():
        try:
            results, crashes = run_local(cfg, shards, weights_dir, progress.update, stop)
        finally:
            progress.close()
    if stop.is_set():
        log.warning("stopped by %s: every file written is kept; run the same command again to resume",
                    signal.Signals(stop.signal).name if stop.signal else "a signal")
    by_status: dict[str, list[str]] = {}
    for result in results:
        by_status.setdefault(result.status, []).append(result.name)
    errors = sum(r.stats.get("errors", 0) for r in results if r.status in ("done", "complete"))
    log.info("finished: %s", progress.summary())
    for crash in crashes:
        log.error("%s", crash)
    for name in by_status.get("failed", []):
        reason = next(r.reason for r in results if r.name == name)
        log.error("shard %s failed: %s", name, reason)
    held = by_status.get("held", [])
    if held:
        log.warning("%d shard(s) held by another process, left to it: %s", len(held), ", ".join(held[:10]))
    complete = len(by_status.get("done", [])) + len(by_status.get("complete", []))
    log.info("%d/%d shards complete (%d already were), %d file errors", complete, len(shards),
             len(by_status.get("complete", [])), errors)
    if crashes:
        return EXIT_FATAL
    if complete < len(shards):
        return EXIT_INCOMPLETE
    return EXIT_FILE_ERRORS if errors else EXIT_OK


def _launch_cluster(cfg: TokenizeConfig, shards: list[Shard], slurm) -> int:
    """Hand the frozen plan to SLURM or Ray; report as a local run would once it has ended."""
    from audiomill.cli import EXIT_FILE_ERRORS, EXIT_INCOMPLETE, EXIT_OK
    from audiomill.runner.slurm import SlurmOptions
    from audiomill.status import collect, totals

    slurm = slurm or SlurmOptions()
    if cfg.executor == "slurm":
        from audiomill.runner.slurm import launch_slurm

        outcome = launch_slurm(cfg, slurm)
    elif cfg.executor == "ray":
        from audiomill.runner.ray import launch_ray

        outcome = launch_ray(cfg, cfg.address, cfg.ray_workers, slurm.until_done)
    else:
        raise UsageError(f"--executor {cfg.executor}: expected local, slurm or ray")
    if outcome == "submitted" and cfg.executor == "slurm":
        return EXIT_OK
    folder = OutputFolder(cfg.out)
    summary = totals(collect(folder, shards, False))
    log.info("%d/%d shards complete, %d failed, %d file errors", summary.get("complete", 0), summary["shards"],
             summary.get("failed", 0), summary["errors"])
    if summary.get("complete", 0) < summary["shards"]:
        log.error("not complete: see 'audiomill status %s'", cfg.out)
        return EXIT_INCOMPLETE
    return EXIT_FILE_ERRORS if summary["errors"] else EXIT_OK
