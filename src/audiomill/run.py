"""A run (``tokenize``, or ``run FILE.toml``): make the plan, run the shards here or on a cluster, report."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time

from audiomill.config import RunConfig
from audiomill.errors import (EXIT_FATAL, EXIT_FILE_ERRORS, EXIT_INCOMPLETE, EXIT_OK, DiskFull, StageBroken,
                              UsageError, is_disk_full)
from audiomill.items import Shard
from audiomill.progress import Progress
from audiomill.runner.plan import prepare
from audiomill.runner.state import OutputFolder

log = logging.getLogger("audiomill")


def run(cfg: RunConfig, slurm=None) -> int:
    """Run ``cfg``; ``slurm`` (a :class:`audiomill.runner.slurm.SlurmOptions`) for --executor slurm.
    Returns the exit status."""
    from audiomill.runner.local import run_local
    from audiomill.runner.process import Stop, stop_on_signals

    try:
        shards = prepare(cfg)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        print(f"audiomill: error: {disk_full_message(cfg.out, [])}", file=sys.stderr)
        return EXIT_FATAL
    if cfg.executor != "local":
        return _launch_cluster(cfg, shards, slurm)
    logs = os.path.join(cfg.out, "_audiomill", "logs")
    handlers = [_LogFile(os.path.join(logs, f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"))]
    if cfg.log_file:
        handlers.append(_LogFile(cfg.log_file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
    for output in cfg.outputs:
        settings = output.settings
        if output.kind == "tokenize" and settings.get("weights") is None:
            print(f"audiomill: note: using randomly initialised weights for {settings['codec']}; the codes are "
                  f"meaningless (pass --model-path DIR for real ones)", file=sys.stderr)
    names = ", ".join(o.group or o.settings.get("codec", o.kind) for o in cfg.outputs)
    log.info("%d shards through %s into %s (%s)", len(shards), names, cfg.out, cfg.output_format)
    progress = Progress(len(shards), cfg.progress, cfg.log_interval)
    stop = Stop()
    stop_on_signals(stop)  # a TERM or USR2 (a time limit in the user's own sbatch script) stops cleanly
    with progress.logging_redirect():
        try:
            results, crashes = run_local(cfg, shards, progress.update, stop)
        except StageBroken as exc:
            log.error("%s\nNothing was recorded for the files it failed on; fix the stage and run again.", exc)
            return EXIT_FATAL
        except DiskFull as exc:
            print(f"audiomill: error: {disk_full_message(exc.out, shards)}", file=sys.stderr)
            return EXIT_FATAL
        finally:
            progress.close()
    _after_run(cfg)
    if stop.is_set():
        log.warning("stopped by %s: every file written is kept; run the same command again to resume",
                    signal.Signals(stop.signal).name if stop.signal else "a signal")
    by_status: dict[str, list[str]] = {}
    for result in results:
        by_status.setdefault(result.status, []).append(result.name)
    errors = sum(r.stats.get("errors", 0) for r in results if r.status in ("done", "complete", "damaged"))
    log.info("finished: %s", progress.summary())
    for crash in crashes:
        log.error("%s", crash)
    for name in by_status.get("failed", []):
        reason = next(r.reason for r in results if r.name == name)
        log.error("shard %s failed: %s", name, reason)
    for name in by_status.get("damaged", []):
        reason = next(r.reason for r in results if r.name == name)
        log.error("shard %s is damaged, so not complete (what it holds intact is kept): %s", name, reason)
    held = by_status.get("held", [])
    if held:  # another run may have finished them meanwhile: then they are complete for this one too
        folder = OutputFolder(cfg.out)
        groups, fmt = folder.groups(), folder.format()
        finished = [name for name in held if folder.complete(name, groups, fmt)]
        for name in finished:
            by_status.setdefault("complete", []).append(name)
            errors += sum((folder.done_stats(name, group) or {}).get("errors", 0) for group in groups)
        held = [name for name in held if name not in finished]
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


def _after_run(cfg: RunConfig) -> None:
    """What a stage kind makes of a run's complete shards once it ends (vad: its CSV and manifest), and the
    folder's dataset card (see :mod:`audiomill.card`)."""
    from audiomill.stages import stage_class

    from audiomill.card import write_card

    folder = OutputFolder(cfg.out)
    for output in cfg.outputs:
        hook = getattr(stage_class(output.kind), "after_run", None)
        if hook is not None:
            try:
                hook(folder, output.group)
            except OSError as exc:  # the shards are written; only the summary is not
                log.error("could not write %s's summary files: %s", output.group or output.kind, exc)
    try:  # the folder as a dataset: datasets.load_dataset(OUT) reads its complete shards
        write_card(folder)
    except OSError as exc:
        log.error("could not write the dataset card %s/README.md: %s", cfg.out, exc)


class _LogFile(logging.FileHandler):
    """The run's log file. One that cannot be written (a full disk) loses its lines without a word:
    the terminal still has them, and the run's own error says what happened."""

    def __init__(self, path: str) -> None:
        super().__init__(path, encoding="utf-8", errors="backslashreplace")

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def disk_full_message(out: str, shards: list[Shard]) -> str:
    """One line: where, how much is free, about how much more the shards left need, and what to do."""
    folder = OutputFolder(out)
    free = shutil.disk_usage(out).free if os.path.isdir(out) else 0
    sizes, left = [], 0
    try:
        groups, fmt = folder.groups(), folder.format()
        for shard in shards:
            stats = [folder.done_stats(shard.name, group) for group in groups]
            if all(s is not None for s in stats):
                sizes.append(sum((s.get("output") or {}).get("bytes", 0) for s in stats))  # type: ignore[union-attr]
            elif not folder.complete(shard.name, groups, fmt):
                left += 1
    except (OSError, ValueError):
        pass
    need = ""
    if sizes and left:
        each = sum(sizes) / len(sizes)
        need = f"; the {left} shard(s) left need about {_size(each * left)} more ({_size(each)} a shard so far)"
    elif left:
        need = f"; {left} shard(s) are left, and none has finished yet to tell how much they need"
    return (f"no space left on the disk of {out} ({_size(free)} free){need}. Free space and rerun: nothing "
            f"written is lost")


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def _launch_cluster(cfg: RunConfig, shards: list[Shard], slurm) -> int:
    """Hand the frozen plan to SLURM or Ray; report as a local run would once it has ended."""
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
    _after_run(cfg)
    folder = OutputFolder(cfg.out)
    summary = totals(collect(folder, shards, False))
    log.info("%d/%d shards complete, %d failed, %d file errors", summary.get("complete", 0), summary["shards"],
             summary.get("failed", 0), summary["errors"])
    if summary.get("complete", 0) < summary["shards"]:
        log.error("not complete: see 'audiomill status %s'", cfg.out)
        return EXIT_INCOMPLETE
    return EXIT_FILE_ERRORS if summary["errors"] else EXIT_OK
