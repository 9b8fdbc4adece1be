"""What is done, running, partial, failed and left in an output folder, per stage and shard."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from audiomill.items import Shard
from audiomill.runner.state import OutputFolder, source_identity
from audiomill.sinks import Format, errors_name, final_name
from audiomill.sinks.journal import file_digest


@dataclass
class ShardState:
    shard: Shard
    state: str  # complete | damaged | running | partial | failed | not started
    files: int = 0
    errors: int = 0
    audio_seconds: float = 0.0
    detail: str = ""
    problems: list[str] = field(default_factory=list)
    group: str = ""  # the stage's output group ("": a one-stage run)


def shard_state(folder: OutputFolder, shard: Shard, group: str = "", fmt: Format | None = None) -> ShardState:
    fmt = fmt or folder.format()
    stats = folder.done_stats(shard.name, group)
    holder = folder.holder(shard.name)
    if stats is not None and holder is None:
        damage = folder.damage(shard.name, group, stats, fmt)
        if stats.get("damaged") and not damage:
            return ShardState(shard, "damaged", stats.get("items", 0), stats.get("errors", 0),
                              stats.get("audio_seconds", 0.0), detail=_source_damage(shard, stats), group=group)
        return ShardState(shard, "damaged" if damage else "complete", stats.get("items", 0), stats.get("errors", 0),
                          stats.get("audio_seconds", 0.0), detail=f"{damage}: a rerun writes it again" if damage else "",
                          group=group)
    files, errors = folder.journal_counts(shard.name, group, fmt)
    if holder is not None:
        who = holder.get("holder") or f"pid {holder.get('pid')}"
        return ShardState(shard, "running", files, errors, detail=f"{who} on {holder.get('host', '?')}", group=group)
    failure = folder.failure(shard.name)
    if failure is not None:
        reason = str(failure.get("reason", "")).strip().splitlines()  # the traceback stays in the marker
        return ShardState(shard, "failed", files, errors, detail=reason[0] if reason else "", group=group)
    if any(os.path.exists(path) for path in folder.journals(shard.name, group, fmt)):
        return ShardState(shard, "partial", files, errors, group=group)
    return ShardState(shard, "not started", group=group)


def _source_damage(shard: Shard, stats: dict[str, Any]) -> str:
    found = list(stats["damaged"])
    said = found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
    if stats.get("source_file") != source_identity(shard.path):
        return f"{said}; {shard.path} has changed since: a rerun reads it again"
    return f"{said}; what it holds intact is kept: replace the archive and run again"


def check_validity(folder: OutputFolder, state: ShardState, fmt: Format) -> list[str]:
    """Every record parses and has a key; a file's records are together; no file is written twice."""
    base = folder.group_dir(state.group)
    name = state.shard.name
    problems: list[str] = []
    if state.state == "damaged" and not (folder.done_stats(name, state.group) or {}).get("damaged"):
        return [state.detail]  # its files are not those written
    if state.state == "damaged":
        problems.append(f"{name}: damaged input: {state.detail}")
    if state.state in ("complete", "damaged"):
        path = os.path.join(base, final_name(name, fmt))
        stats = folder.done_stats(name, state.group) or {}
        kept = stats.get("output") or {}
        if kept.get("sha256") and file_digest(path)["sha256"] != kept["sha256"]:
            problems.append(f"{final_name(name, fmt)} is not the file that was written (its checksum differs)")
        members = stats.get("members") or {}
        if members.get("sha256") and file_digest(os.path.join(base, members["file"]))["sha256"] != members["sha256"]:
            problems.append(f"{members['file']} is not the file that was written (its checksum differs)")
        try:
            keys = [record[stats.get("file_key", "key")] for record in fmt.read(path, {})]
        except Exception as exc:  # any damage at all is a problem to report, not a traceback
            return problems + [f"{final_name(name, fmt)}: unreadable ({type(exc).__name__}: {exc})"]
        if "records" in stats and len(keys) != stats["records"]:
            problems.append(f"{final_name(name, fmt)} holds {len(keys)} records; {stats['records']} were written")
        errors_path = os.path.join(base, errors_name(name))
    else:
        stats = {}
        journal, errors_path = folder.journals(name, state.group, fmt)
        keys = [entry["key"] for entry in _lines(journal, problems, torn_ok=True)]
    seen: set[str] = set()
    previous = None
    for number, key in enumerate(keys, 1):
        if key != previous and key in seen:
            problems.append(f"{final_name(name, fmt)}: record {number}: key {key!r} written twice")
        seen.add(key)
        previous = key
    recorded = set(seen)
    for error in _lines(errors_path, problems, torn_ok=state.state not in ("complete", "damaged")):
        if error["key"] in seen:
            problems.append(f"{os.path.basename(errors_path)}: key {error['key']!r} is both a record and an error")
        seen.add(error["key"])
    if state.state in ("complete", "damaged"):
        problems += _against_members(state.shard, recorded, seen, stats)
    return problems


def _against_members(shard: Shard, recorded: set[str], seen: set[str], stats: dict[str, Any]) -> list[str]:
    """The keys written against the files the shard holds (read again from its input): none foreign,
    and none left out (when every file gave a record, as a tokenizer's do: a stage may give none)."""
    from audiomill.sources import read_shard

    try:
        members = {item.key for item in read_shard(shard, want=lambda key: False)}  # damage keys too
    except Exception as exc:  # the input is gone or unreadable: say so, it is no traceback
        return [f"{shard.name}: its input {shard.path} cannot be read to compare ({type(exc).__name__}: {exc})"]
    problems = []
    foreign = sorted(key for key in seen - members if not key.startswith("@"))
    if foreign:
        problems.append(f"{shard.name}: {len(foreign)} key(s) written that the shard does not hold, such as "
                        f"{', '.join(map(repr, foreign[:3]))}")
    missing = sorted(members - seen)
    if missing and stats.get("items") == len(recorded):
        problems.append(f"{shard.name}: {len(missing)} file(s) of the shard have neither a record nor an error, "
                        f"such as {', '.join(map(repr, missing[:3]))}")
    return problems


def _lines(path: str, problems: list[str], torn_ok: bool) -> list[dict[str, Any]]:
    """The parsable lines of a JSON Lines file that have a key; the others are problems."""
    if not os.path.isfile(path):
        return []
    found = []
    name = os.path.basename(path)
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith(b"\n"):
                if not torn_ok:
                    problems.append(f"{name}:{number}: last line is not terminated")
                continue  # a torn tail of a journal: dropped on resume
            try:
                record = json.loads(line)
                record["key"]
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{name}:{number}: not a record ({type(exc).__name__})")
                continue
            found.append(record)
    return found


def collect(folder: OutputFolder, shards: list[Shard], validity: bool) -> list[ShardState]:
    """The state of every (stage, shard), stage by stage."""
    fmt = folder.format()
    states = []
    for group in folder.groups():
        for shard in shards:
            state = shard_state(folder, shard, group, fmt)
            if validity and state.state != "not started":
                state.problems = check_validity(folder, state, fmt)
            states.append(state)
    return states


def totals(states: list[ShardState]) -> dict[str, Any]:
    """Counts over the shards. With several stages a shard is complete when every stage is, and the
    files and audio are the first stage's; errors are every stage's."""
    by_shard: dict[str, list[ShardState]] = {}
    for s in states:
        by_shard.setdefault(s.shard.name, []).append(s)
    rank = ("failed", "damaged", "running", "partial", "not started", "complete")
    by_state: dict[str, int] = {}
    for group in by_shard.values():
        worst = min((s.state for s in group), key=lambda state: rank.index(state) if state in rank else 0)
        if worst == "not started" and any(s.state != "not started" for s in group):
            worst = "partial"
        by_state[worst] = by_state.get(worst, 0) + 1
    firsts = [group[0] for group in by_shard.values()]
    return {
        "shards": len(by_shard),
        **{k.replace(" ", "_"): v for k, v in sorted(by_state.items())},
        "files": sum(s.files for s in firsts),
        "errors": sum(s.errors for s in states),
        "audio_hours": round(sum(s.audio_seconds for s in firsts) / 3600, 4),
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
