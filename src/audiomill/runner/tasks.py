"""One task of a cluster run (a SLURM array task, a Ray task): the local executor on its node over
the plan's shards that are not complete.

Tasks do not divide the shards between them: each one walks every remaining shard, starting at
its own offset, and the shard locks decide who writes what. A fast task therefore takes over the
shards a slow one has not reached, a requeued task picks up whatever is left, and no shard is ever
written by two tasks. What each task did is kept in ``_audiomill/tasks/<executor>-<job>.json``
(state, host, attempt, log file, and the traceback of a crash) for ``audiomill status``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import time
import traceback
from typing import Any, Callable

from audiomill.config import RunConfig
from audiomill.items import Shard
from audiomill.runner.local import run_local
from audiomill.runner.process import Stop
from audiomill.runner.state import OutputFolder, read_json, write_json_atomic

log = logging.getLogger(__name__)


def remaining_shards(folder: OutputFolder) -> list[Shard]:
    """The plan's shards that some stage has not marked done, failed ones included (a task may read them again)."""
    groups, fmt = folder.groups(), folder.format()
    return [s for s in folder.shards() if not folder.complete(s.name, groups, fmt)]


def left_to_do(folder: OutputFolder) -> list[Shard]:
    """Remaining shards that are not marked failed, nor damaged at the source: what another round
    could still complete."""
    groups = folder.groups()
    return [s for s in remaining_shards(folder)
            if folder.failure(s.name) is None and folder.damaged_source(s, groups) is None]


def task_order(shards: list[Shard], index: int, count: int) -> list[Shard]:
    """All of ``shards``, rotated so that ``count`` tasks start on different ones."""
    if not shards:
        return []
    start = (index * len(shards)) // max(1, count)
    return shards[start:] + shards[:start]


def tasks_folder(folder: OutputFolder) -> str:
    return os.path.join(folder.state, "tasks")


def read_tasks(folder: OutputFolder) -> list[dict[str, Any]]:
    path = tasks_folder(folder)
    if not os.path.isdir(path):
        return []
    records = []
    for name in sorted(os.listdir(path)):
        if name.endswith(".json"):
            try:
                records.append(read_json(os.path.join(path, name)))
            except (OSError, ValueError):
                continue  # being replaced right now
    return records


def task_config(folder: OutputFolder, devices: str | None = None) -> RunConfig:
    """The frozen plan's config for a task on this node."""
    plan = folder.plan()
    cfg = dataclasses.replace(plan.config, outputs=list(plan.outputs))
    cfg.out = folder.out
    cfg.retry_errors = False
    cfg.progress = "log"
    cfg.log_file = None
    if devices:
        cfg.devices = devices
    return cfg


def run_task(out: str, index: int, count: int, executor: str, job: str, stop: Stop | None = None,
             devices: str | None = None, attempt: int = 0, requeue: Callable[[], None] | None = None) -> str:
    """Run task ``index`` of ``count`` over the plan in ``out``; returns the state it recorded
    (finished, stopped, requeued, crashed). A worker's crash is recorded, not raised; the task's
    own exception is recorded, then raised.

    ``requeue`` is called when a time-limit or preemption warning (USR2) stopped the task while
    shards are still left: the executor puts the task back in its queue."""
    from audiomill.progress import Progress

    folder = OutputFolder(os.path.abspath(out))
    os.makedirs(tasks_folder(folder), exist_ok=True)
    name = f"{executor}-{job}"
    log_path = os.path.join(folder.state, "logs", f"{name}.{attempt}.log")
    handler = logging.FileHandler(log_path, encoding="utf-8", errors="backslashreplace")
    handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    record: dict[str, Any] = {"executor": executor, "job": job, "task": index, "tasks": count, "attempt": attempt,
                              "host": socket.gethostname(), "pid": os.getpid(), "state": "running",
                              "started": time.time(), "log": os.path.relpath(log_path, folder.out)}
    record_path = os.path.join(tasks_folder(folder), f"{name}.json")
    write_json_atomic(record_path, record)
    try:
        cfg = task_config(folder, devices)
        shards = task_order(remaining_shards(folder), index, count)
        log.info("task %d of %d (attempt %d): %d shards not complete", index, count, attempt, len(shards))
        progress = Progress(len(shards), "log", cfg.log_interval)
        try:
            results, crashes = run_local(cfg, shards, progress.update, stop, holder=f"{executor} {job}")
        finally:
            progress.close()
        done = sum(1 for r in results if r.status == "done")
        failed = [r for r in results if r.status == "failed"]
        log.info("task %d: %d shards written, %d failed, %s", index, done, len(failed), progress.summary())
        if crashes:
            record.update(state="crashed", error="\n".join(crashes))
        elif stop is not None and stop.is_set():
            record.update(state="stopped", signal=stop.signal)
            left = len(left_to_do(folder))
            if requeue is not None and stop.signal == signal.SIGUSR2 and left:
                log.info("requeueing this task: %d shards left", left)
                requeue()
                record["state"] = "requeued"
        else:
            record.update(state="finished")
        record.update(shards_written=done, shards_failed=len(failed))
    except BaseException as exc:
        record.update(state="crashed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        log.error("task %d crashed: %s", index, record["error"])
        raise
    finally:
        record["ended"] = time.time()
        write_json_atomic(record_path, record)
        root.removeHandler(handler)
        handler.close()
    return record["state"]


def _snapshot(folder: OutputFolder) -> tuple[int, int]:
    """(shards left, lines written to journals): a round that changes neither did nothing."""
    left = left_to_do(folder)
    fmt, groups = folder.format(), folder.groups()
    lines = sum(sum(folder.journal_counts(s.name, group, fmt)) for s in left for group in groups)
    return len(left), lines


def run_rounds(folder: OutputFolder, max_tasks: int, launch: Callable[[int], str],
               wait: Callable[[str], None], until_done: bool) -> str:
    """Launch tasks for what is left (at most ``max_tasks``); with ``until_done``, wait for each
    round and launch again while shards are left and the last round made progress.

    Returns "complete", "submitted" (without until_done) or "stuck"."""
    rounds = 0
    before = _snapshot(folder)
    while before[0]:
        job = launch(min(max_tasks, before[0]))
        rounds += 1
        if not until_done:
            return "submitted"
        wait(job)
        after = _snapshot(folder)
        if after[0] and after == before:
            log.error("round %d (job %s) completed nothing: %d shards left; see 'audiomill status %s'",
                      rounds, job, after[0], folder.out)
            return "stuck"
        if after[0]:
            log.info("round %d (job %s) ended with %d shards left: submitting again", rounds, job, after[0])
        before = after
    return "complete"
