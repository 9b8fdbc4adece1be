"""The SLURM executor: an array job through submitit, each task the local executor on its node.

The plan is frozen in the output folder before anything is submitted; every array task reads it
from there and runs the shards that are not complete (see :mod:`audiomill.runner.tasks`). On the
time-limit warning (``--signal=USR2@S``, which submitit sets) or a preemption warning
(``scancel --signal=USR2``), a task writes the batch it is encoding, leaves its shards resumable,
releases them and requeues itself with ``scontrol requeue``; the requeued task carries on with
what is left. ``--until-done`` resubmits what is still left when an array has ended (a task
killed outright, a node lost), until every shard is complete or a round completes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from audiomill.errors import UsageError
from audiomill.runner.process import Stop, stop_on_signals
from audiomill.runner.state import OutputFolder
from audiomill.runner.tasks import left_to_do, run_rounds, run_task

log = logging.getLogger(__name__)


@dataclass
class SlurmOptions:
    """The ``--executor slurm`` flags, one to one."""

    partition: str | None = None
    time: str = "2:00:00"
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    nodes_max: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: list[str] = field(default_factory=list)  # extra #SBATCH options: KEY=VALUE or KEY
    setup: list[str] = field(default_factory=list)  # shell lines run before the task (module load, ...)
    signal_seconds: int = 120
    job_name: str = "audiomill"
    until_done: bool = False
    poll_seconds: float = 15.0


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str) -> int:
    """A SLURM time limit (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in whole minutes, rounded up."""
    match = _TIME.match(text.strip())
    if not match:
        raise UsageError(f"--time {text}: expected a SLURM time such as 120, 2:00:00 or 1-12:00:00")
    days, first, second, third = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # H:M:S
        seconds = first * 3600 + (second or 0) * 60 + third
    elif second is not None:  # M:S
        seconds = first * 60 + second
    else:  # M
        seconds = first * 60
    if seconds <= 0:
        raise UsageError(f"--time {text}: must be more than zero")
    return -(-seconds // 60)


def extra_sbatch(lines: list[str]) -> dict[str, Any]:
    """``--sbatch reservation=big`` -> {"reservation": "big"}; ``--sbatch exclusive`` -> {"exclusive": True}."""
    extra: dict[str, Any] = {}
    for line in lines:
        text = line.strip().removeprefix("#SBATCH").strip().lstrip("-")
        key, sep, value = text.partition("=")
        if not key or " " in key:
            raise UsageError(f"--sbatch {line!r}: expected an sbatch option such as reservation=NAME or exclusive")
        extra[key] = value if sep else True
    return extra


def sbatch_options(opts: SlurmOptions) -> dict[str, Any]:
    """Everything asked of SLURM, as sbatch long options without the dashes."""
    options: dict[str, Any] = {"job-name": opts.job_name, "time": parse_time(opts.time), "nodes": 1,
                               "ntasks-per-node": 1, "requeue": True}
    for key in ("partition", "account", "qos", "constraint", "mem"):
        if getattr(opts, key):
            options[key] = getattr(opts, key)
    if opts.gpus_per_node:
        options["gpus-per-node"] = opts.gpus_per_node
    if opts.cpus_per_task:
        options["cpus-per-task"] = opts.cpus_per_task
    options.update(extra_sbatch(opts.sbatch))
    return options


def task_devices(opts: SlurmOptions) -> str | None:
    """A node's task uses every GPU of its allocation; on CPU nodes, the run's own --devices."""
    return "all" if opts.gpus_per_node else None


# ---- inside a task ----------------------------------------------------------------------------

def job_id() -> str:
    """``<array job>_<task>`` for an array task (what squeue and scancel show), else the job id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", f"pid{os.getpid()}")


def slurm_task(out: str, index: int, count: int, devices: str | None = None) -> str:
    """Run array task ``index`` of ``count``; requeue it when a USR2 stopped it with work left."""
    from multiprocessing import resource_tracker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # SLURM signals every process of the step. The helper multiprocessing starts must not die of a
    # USR2 or TERM: it inherits their being ignored if started now, before our handlers go in.
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGUSR2, signal.SIGTERM)}
    resource_tracker.ensure_running()
    for number, handler in previous.items():
        signal.signal(number, handler)
    stop = Stop()
    stop_on_signals(stop)  # replaces submitit's own USR2 handler, which would exit mid-batch
    attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0)

    def requeue() -> None:
        subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=True, timeout=60)

    return run_task(out, index, count, "slurm", job_id(), stop, devices, attempt,
                    requeue if os.environ.get("SLURM_JOB_ID") else None)


class SlurmTask:
    """What submitit pickles: a callable over the task index, carrying only plain data."""

    def __init__(self, out: str, count: int, devices: str | None) -> None:
        self.out, self.count, self.devices = out, count, devices

    def __call__(self, index: int) -> str:
        return slurm_task(self.out, index, self.count, self.devices)


# ---- on the submitting machine ----------------------------------------------------------------

def submit(folder: OutputFolder, opts: SlurmOptions, count: int, devices: str | None) -> str:
    """Submit an array of ``count`` tasks through submitit; returns the array's job id."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--executor slurm needs submitit: pip install 'audiomill[slurm]'") from None
    if shutil.which("sbatch") is None:
        raise UsageError("--executor slurm submits with sbatch, which is not on PATH: run it on a SLURM login node")
    options = sbatch_options(opts)
    executor = submitit.SlurmExecutor(folder=os.path.join(folder.state, "slurm"), max_num_timeout=0)
    params: dict[str, Any] = {"time": options.pop("time"), "nodes": options.pop("nodes"),
                              "ntasks_per_node": options.pop("ntasks-per-node"), "job_name": options.pop("job-name"),
                              "signal_delay_s": opts.signal_seconds, "array_parallelism": count,
                              "stderr_to_stdout": True, "setup": list(opts.setup)}
    executor.update_parameters(**params, additional_parameters=options)
    try:
        jobs = executor.map_array(SlurmTask(folder.out, count, devices), range(count))
    except Exception as exc:  # submitit raises for sbatch's complaints; show sbatch's own line
        message = str(exc).strip().splitlines()
        raise UsageError(f"sbatch refused the array: {message[-1] if message else exc}") from None
    return jobs[0].job_id.split("_")[0]


def squeue_states(job: str) -> list[str] | None:
    """The states squeue lists for ``job`` (each task of an array, requeued ones pending): empty
    once it has ended, None when squeue cannot tell."""
    if not job or shutil.which("squeue") is None:
        return None
    try:
        result = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return [] if "Invalid job id" in result.stderr else None  # ended and purged, or no answer
    return result.stdout.split()


def job_running(array_id: str) -> bool:
    """Whether any task of the array is still pending or running (requeued ones included)."""
    states = squeue_states(array_id)
    if states is None:
        raise UsageError(f"squeue cannot tell whether job {array_id} is still running")
    return bool(states)


def launch_slurm(cfg, opts: SlurmOptions) -> str:
    """Submit (and with ``until_done`` follow) arrays over the plan frozen in ``cfg.out``."""
    folder = OutputFolder(cfg.out)
    parse_time(opts.time)
    devices = task_devices(opts) or cfg.devices
    if opts.gpus_per_node and not opts.cpus_per_task:
        log.warning("no --cpus-per-task: each task gets the partition's default CPUs (often 1), and its "
                    "decoders are sized to them; ask for the node's cores so decoding keeps %d GPUs fed",
                    opts.gpus_per_node)

    def launch(count: int) -> str:
        array = submit(folder, opts, count, devices)
        log.info("SLURM array %s: %d tasks over the shards not complete; task logs in %s", array, count,
                 os.path.join(folder.state, "logs"))
        print(f"submitted SLURM array job {array} ({count} tasks); follow it with: audiomill status {cfg.out}",
              file=sys.stderr)
        return array

    def wait(array: str) -> None:
        last = 0.0
        try:
            while job_running(array):
                if time.time() - last > 60:
                    last = time.time()
                    log.info("job %s: %d shards left", array, len(left_to_do(folder)))
                time.sleep(opts.poll_seconds)
        except KeyboardInterrupt:
            print(f"audiomill: array job {array} keeps running (scancel {array} stops it)", file=sys.stderr)
            raise

    return run_rounds(folder, opts.nodes_max, launch, wait, opts.until_done)


def sbatch_script(out: str, opts: SlurmOptions, count: int, devices: str | None) -> str:
    """A ready array script over the plan in ``out``, for clusters that only allow sbatch."""
    options = sbatch_options(opts)
    options.update({"array": f"0-{count - 1}", "signal": f"USR2@{opts.signal_seconds}", "open-mode": "append",
                    "output": os.path.join(out, "_audiomill", "slurm", "%A_%a_log.out")})
    lines = ["#!/bin/bash",
             f"# audiomill {count}-task array over the plan in {out}, written by 'audiomill slurm-script'.",
             "# Submit it again at any time: tasks only take shards that are not complete.",
             "# A preemption warning reaches the task with: scancel --signal=USR2 JOBID"]
    for key in sorted(options):
        value = options[key]
        lines.append(f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={shlex.quote(str(value))}")
    lines += ["", *opts.setup]
    command = [sys.executable, "-m", "audiomill", "slurm-task", out, "--tasks", str(count)]
    if devices:
        command += ["--devices", devices]
    lines += ["srun --unbuffered " + " ".join(shlex.quote(c) for c in command) + ' --task "$SLURM_ARRAY_TASK_ID"',
              ""]
    return "\n".join(lines)
