"""The Ray executor: the plan's shard tasks on a Ray cluster, one GPU per task.

Each Ray task is a :func:`audiomill.runner.tasks.run_task` over the shards that are not complete,
exactly as a SLURM array task is, so the output folder (on storage every node sees) is the only
thing tasks share. Without ``--address`` a Ray cluster is started on this machine for the run.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time

from audiomill.errors import UsageError
from audiomill.runner.local import parse_devices
from audiomill.runner.state import OutputFolder
from audiomill.runner.tasks import run_rounds, run_task

log = logging.getLogger(__name__)


def _task(out: str, index: int, count: int, job: str, devices: str) -> str:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run_task(out, index, count, "ray", job, devices=devices)


def _connect(address: str | None, cpus: int | None):
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'audiomill[ray]'") from None
    if ray.is_initialized():
        return ray
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    else:
        # A cluster of our own on this machine: no token to hand around, no dashboard to serve.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)
    return ray


def launch_ray(cfg, address: str | None, workers: int, until_done: bool) -> str:
    """Run the plan in ``cfg.out`` as Ray tasks and wait for them; returns as run_rounds does."""
    folder = OutputFolder(cfg.out)
    local_devices = parse_devices(cfg.devices) if not address else []
    cpu_workers = sum(1 for d in local_devices if d == "cpu")
    ray = _connect(address, (os.cpu_count() or 1) if cpu_workers else None)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        count, per_task, devices = workers or gpus, {"num_gpus": 1}, "all"
    else:
        count = workers or max(1, cpu_workers)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        per_task, devices = {"num_cpus": max(1, cpus // count)}, "cpu"
    remote = ray.remote(max_retries=2, **per_task)(_task)
    started = time.strftime("%Y%m%d-%H%M%S")
    rounds = itertools.count(1)

    def launch(tasks: int) -> str:
        job = f"{started}-{next(rounds)}"
        log.info("Ray: %d tasks (%s each) over the shards not complete", tasks,
                 ", ".join(f"{k}={v}" for k, v in per_task.items()))
        print(f"running {tasks} Ray tasks; follow them with: audiomill status {cfg.out}", file=sys.stderr)
        refs = [remote.remote(folder.out, i, tasks, f"{job}-{i}", devices) for i in range(tasks)]
        for ref in refs:
            try:
                ray.get(ref)
            except Exception as exc:  # recorded in the task's record; the round's result decides
                log.error("a Ray task failed: %s", str(exc).strip().splitlines()[-1] if str(exc).strip() else exc)
        return job

    return run_rounds(folder, count, launch, lambda job: None, until_done)  # launch itself waits
