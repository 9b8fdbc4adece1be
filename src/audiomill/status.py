"""What is done, running, partial, failed and left in an output folder."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from audiomill.items import Shard
from audiomill.runner.state import OutputFolder


@dataclass
class ShardState:
    shard: Shard
    state: str  # complete | running | partial | failed | not started
    files: int = 0
    errors: int = 0
    audio_seconds: float = 0.0
    detail: str = ""
    problems: list[str] = field(default_factory=list)


def count_lines(path: str) -> int:
    """Whole lines in a file (a torn last line does not count)."""
    if not os.path.exists(path):
        return 0
    count = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count


def shard_state(folder: OutputFolder, shard: Shard) -> ShardState:
    base = os.path.join(folder.out, shard.name)
    stats = folder.done_stats(shard.name)
    holder = folder.holder(shard.name)
    if stats is not None and holder is None:
        return ShardState(shard, "complete", stats.get("items", 0), stats.get("errors", 0),
                          stats.get("audio_seconds", 0.0))
    files = count_lines(base + ".jsonl.partial")
    errors = count_lines(base + ".errors.jsonl.partial")
    if holder is not None:
        who = holder.get("holder") or f"pid {holder.get('pid')}"
        return ShardState(shard, "running", files, errors, detail=f"{who} on {holder.get('host', '?')}")
    failure = folder.failure(shard.name)
    if failure is not None:
        return ShardState(shard, "failed", files, errors, detail=failure.get("reason", ""))
    if os.path.exists(base + ".jsonl.partial") or os.path.exists(base + ".errors.jsonl.partial"):
        return ShardState(shard, "partial", files, errors)
    return ShardState(shard, "not started")


def check_validity(folder: OutputFolder, state: ShardState) -> list[str]:
    """Every line parses and has a key; no key appears twice in the shard's records and errors."""
    base = os.path.join(folder.out, state.shard.name)
    if state.state == "complete":
        paths = [base + ".jsonl", base + ".errors.jsonl"]
    else:
        paths = [base + ".jsonl.partial", base + ".errors.jsonl.partial"]
    problems: list[str] = []
    seen: set[str] = set()
    for path in paths:
        if not os.path.exists(path):
            if path == base + ".jsonl" and state.state == "complete":
                problems.append(f"{os.path.basename(path)} is missing")
            continue
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                name = os.path.basename(path)
                if not line.endswith(b"\n"):
                    if state.state == "complete":
                        problems.append(f"{name}:{number}: last line is not terminated")
                    continue  # a torn tail of a partial: dropped on resume
                try:
                    record = json.loads(line)
                    key = record["key"]
                except (ValueError, KeyError, TypeError) as exc:
                    problems.append(f"{name}:{number}: not a record ({type(exc).__name__})")
                    continue
                if key in seen:
                    problems.append(f"{name}:{number}: duplicate key {key!r}")
                seen.add(key)
    return problems


def collect(folder: OutputFolder, shards: list[Shard], validity: bool) -> list[ShardState]:
    states = []
    for shard in shards:
        state = shard_state(folder, shard)
        if validity and state.state != "not started":
            state.problems = check_validity(folder, state)
        states.append(state)
    return states


def totals(states: list[ShardState]) -> dict[str, Any]:
    by_state: dict[str, int] = {}
    for s in states:
        by_state[s.state] = by_state.get(s.state, 0) + 1
    return {
        "shards": len(states),
        **{k.replace(" ", "_"): v for k, v in sorted(by_state.items())},
        "files": sum(s.files for s in states),
        "errors": sum(s.errors for s in states),
        "audio_hours": round(sum(s.audio_seconds for s in states) / 3600, 4),
        "problems": sum(len(s.problems) for s in states),
    }


def task_states(folder: OutputFolder) -> list[dict[str, Any]]:
    """The records of the cluster tasks (SLURM, Ray) that worked on this folder, newest first.

    A task still marked running whose process is gone (killed outright: SIGKILL, the OOM killer,
    a lost node) is shown as ``lost``: for SLURM by asking squeue, on this host by its pid."""
    import socket

    from audiomill.runner.slurm import squeue_states
    from audiomill.runner.tasks import read_tasks

    records = read_tasks(folder)
    for record in records:
        if record.get("state") != "running":
            continue
        alive = None
        if record.get("executor") == "slurm":
            states = squeue_states(str(record.get("job", "")))
            if states is not None:
                alive = any(state in ("RUNNING", "COMPLETING", "CONFIGURING") for state in states)
        if alive is None and record.get("host") == socket.gethostname():
            alive = _pid_alive(int(record.get("pid", 0)))
        if alive is False:
            record["state"] = "lost"
    records.sort(key=lambda r: r.get("started", 0), reverse=True)
    return records


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
