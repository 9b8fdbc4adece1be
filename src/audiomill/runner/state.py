"""What an output folder says about a run: its plan, which shards are done, held or failed.

Layout (all of it under ``<out>/_audiomill``)::

    plan.json              shards, stages, format, config and versions, frozen at the first launch
    listing/<input>.json   the files of a folder or manifest input, listed once when the plan is made
    done/<shard>.json      written last when a shard is complete: its stats (one-stage runs)
    done/<group>/<shard>.json   the same per stage of a multi-stage run (``<out>/<group>/``)
    schema/<group>.json    the metadata columns of an output whose format has a schema (Parquet)
    failed/<shard>.json    a shard that could not be read at all, and why
    locks/<shard>.lock     flock()ed while a worker writes the shard; holds who
    logs/                  per-run and per-task logs
    tasks/<executor>-<job>.json   what each SLURM or Ray task did (see runner.tasks)
    slurm/                 submitit's pickles and SLURM's own output of each array task
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audiomill.config import Output, RunConfig
from audiomill.files import write_atomic
from audiomill.items import Shard
from audiomill.sinks import OutputFormat

if TYPE_CHECKING:
    from audiomill.sinks import Format

STATE_DIR = "_audiomill"

log = logging.getLogger(__name__)


def write_json_atomic(path: str, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def count_lines(path: str) -> int:
    """Whole lines in a file (a torn last line does not count); 0 if there is none."""
    if not os.path.isfile(path):
        return 0
    count = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_marker(path: str) -> dict[str, Any] | None:
    """A state file, or None if there is none. One that is not a JSON object (damaged by hand, a disk
    error) counts as absent, with a warning: its shard is simply done again."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is damaged (%s): ignoring it", path, type(exc).__name__)
        return None
    if not isinstance(data, dict):
        log.warning("%s is damaged (not a JSON object): ignoring it", path)
        return None
    return data


def source_identity(path: str) -> dict[str, int] | None:
    """What tells a shard's input file from another one put in its place (a fresh download)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


class ShardLock:
    """An exclusive flock on a shard; the kernel drops it when the holder dies, even by SIGKILL."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


PLAN_KEYS = ("created", "format", "outputs", "config", "versions", "shards")


@dataclass(frozen=True)
class Plan:
    """``plan.json``, typed: what a run froze (see :mod:`audiomill.runner.plan`)."""

    format: OutputFormat
    outputs: tuple[Output, ...]
    config: RunConfig  # the run-wide config of the launch that last wrote the plan
    shards: tuple[Shard, ...]
    created: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # what older plans hold besides, kept as found

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        outputs = data.get("outputs") or _outputs_of_old_plan(data)
        return cls(format=OutputFormat.parse(data.get("format", "jsonl")),
                   outputs=tuple(Output.from_json(o) for o in outputs),
                   config=RunConfig.from_json(data.get("config") or {}),
                   shards=tuple(Shard.from_json(s) for s in data.get("shards") or ()),
                   created=data.get("created", 0.0), versions=data.get("versions") or {},
                   extra={k: v for k, v in data.items() if k not in PLAN_KEYS})

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "created": self.created, "format": str(self.format),
                "outputs": [o.to_json() for o in self.outputs], "config": self.config.to_json(),
                "versions": self.versions, "shards": [s.to_json() for s in self.shards]}

    def groups(self) -> list[str]:
        """The output groups (``[""]`` for a one-stage run)."""
        return [o.group for o in self.outputs]

    def output(self, group: str) -> Output | None:
        return next((o for o in self.outputs if o.group == group), None)

    def settings(self, group: str) -> dict[str, Any]:
        """The checked settings of the stage writing ``group`` ({} if the plan names none)."""
        output = self.output(group)
        return output.settings if output is not None else {}


def _outputs_of_old_plan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan from before stages were named: its one tokenize stage, whose settings its config held."""
    from dataclasses import fields

    from audiomill.stages import stage_class
    from audiomill.stages.settings import settings_class

    config = plan.get("config") or {}
    settings = {f.name: config.get(f.name) for f in fields(settings_class(stage_class("tokenize")))}
    settings["weights"] = None if plan.get("weights") in (None, "random") else plan["weights"]
    return [{"group": "", "kind": "tokenize", "settings": settings}]


class OutputFolder:
    def __init__(self, out: str) -> None:
        self.out = out
        self.state = os.path.join(out, STATE_DIR)
        self.plan_path = os.path.join(self.state, "plan.json")
        self._plan: tuple[tuple[int, int, int], Plan] | None = None

    def create(self, groups: tuple[str, ...] = ("",)) -> None:
        for sub in ("done", "failed", "locks", "logs", "tasks", "slurm", "schema", "listing"):
            os.makedirs(os.path.join(self.state, sub), exist_ok=True)
        for group in groups:
            if group:
                os.makedirs(os.path.join(self.state, "done", group), exist_ok=True)
                os.makedirs(self.group_dir(group), exist_ok=True)

    def group_dir(self, group: str) -> str:
        """Where an output group's files go: the output folder itself for a one-stage run."""
        return os.path.join(self.out, group) if group else self.out

    def groups(self) -> list[str]:
        """The output groups of the plan (``[""]`` for a one-stage run)."""
        return self.plan().groups()

    def schema(self, group: str) -> "SchemaFile":
        return SchemaFile(os.path.join(self.state, "schema", f"{group or '_'}.json"))

    def exists(self) -> bool:
        return os.path.isfile(self.plan_path)

    # plan
    def plan(self) -> Plan:
        """The plan, parsed once for as long as the file stays the one parsed (a launch that extends it
        replaces the file)."""
        st = os.stat(self.plan_path)
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._plan is None or self._plan[0] != seen:
            self._plan = (seen, Plan.from_json(read_json(self.plan_path)))
        return self._plan[1]

    def complete_records(self, group: str, errors: bool = True, fields: dict[str, str] | None = None):
        """The records of the group's complete shards, in the plan's order (each shard's error records after
        its records, with ``errors``): what an after-run hook summarises. Codes a format keeps apart come
        back only where ``fields`` declares them."""
        from audiomill.sinks import errors_name, final_name

        fmt = self.format()
        groups = self.groups()
        where = self.group_dir(group)
        for shard in self.shards():
            if not self.complete(shard.name, groups, fmt):
                continue
            yield from fmt.read(os.path.join(where, final_name(shard.name, fmt)), fields or {})
            errors_path = os.path.join(where, errors_name(shard.name))
            if errors and os.path.isfile(errors_path):
                with open(errors_path, encoding="utf-8") as handle:
                    yield from (json.loads(line) for line in handle if line.strip())

    def write_plan(self, plan: Plan) -> None:
        write_json_atomic(self.plan_path, plan.to_json())

    def shards(self) -> list[Shard]:
        return list(self.plan().shards)

    def format(self) -> "Format":
        from audiomill.sinks import get_format

        return get_format(self.plan().format)

    def journals(self, name: str, group: str = "", fmt: "Format | None" = None) -> tuple[str, str]:
        """The journal of records and of errors of a shard in progress."""
        from audiomill.sinks import errors_name, journal_name

        folder = self.group_dir(group)
        fmt = fmt or self.format()
        return os.path.join(folder, journal_name(name, fmt)), os.path.join(folder, errors_name(name) + ".partial")

    def journal_counts(self, name: str, group: str = "", fmt: "Format | None" = None) -> tuple[int, int]:
        """(files, errors) journaled so far for a shard in progress."""
        records, errors = self.journals(name, group, fmt)
        return count_lines(records), count_lines(errors)

    # per-shard markers
    def _marker(self, kind: str, name: str, group: str = "") -> str:
        return os.path.join(self.state, kind, group, f"{name}.json") if group else \
            os.path.join(self.state, kind, f"{name}.json")

    def done_stats(self, name: str, group: str = "") -> dict[str, Any] | None:
        return read_marker(self._marker("done", name, group))

    def mark_done(self, name: str, stats: dict[str, Any], group: str = "") -> None:
        write_json_atomic(self._marker("done", name, group), stats)
        self.clear_failed(name)

    def complete(self, name: str, groups: list[str], fmt: "Format | None" = None) -> bool:
        """Every output group of the shard is marked done, its source was not found damaged, and its
        files are still those written."""
        fmt = fmt or self.format()
        for group in groups:
            stats = self.done_stats(name, group)
            if stats is None or stats.get("damaged") or self.damage(name, group, stats, fmt):
                return False
        return True

    def damaged_source(self, shard: Shard, groups: list[str]) -> list[str] | None:
        """The damage found in the shard's source, if a stage recorded some and the source is still
        the file it was found in (a rerun then finds the same: it is not read again)."""
        for group in groups:
            stats = self.done_stats(shard.name, group) or {}
            if stats.get("damaged") and stats.get("source_file") == source_identity(shard.path):
                return list(stats["damaged"])
        return None

    def damage(self, name: str, group: str, stats: dict[str, Any], fmt: "Format") -> str | None:
        """Why the files of a shard marked done (with ``stats``) are not those it wrote, or None."""
        from audiomill.sinks import errors_name, final_name

        folder = self.group_dir(group)
        path = os.path.join(folder, final_name(name, fmt))
        kept = stats.get("output")
        if not os.path.exists(path):
            return f"{final_name(name, fmt)} is missing"
        if isinstance(kept, dict) and os.path.getsize(path) != kept.get("bytes"):
            return f"{final_name(name, fmt)} has changed: {os.path.getsize(path)} bytes, not {kept.get('bytes')}"
        if stats.get("errors") and not os.path.exists(os.path.join(folder, errors_name(name))):
            return f"{errors_name(name)} is missing"
        members = stats.get("members")
        if isinstance(members, dict) and members.get("file"):
            tar = os.path.join(folder, members["file"])
            if not os.path.exists(tar):
                return f"{members['file']} is missing"
            if os.path.getsize(tar) != members.get("bytes"):
                return f"{members['file']} has changed: {os.path.getsize(tar)} bytes, not {members.get('bytes')}"
        return None

    def unmark_done(self, name: str, group: str = "") -> None:
        path = self._marker("done", name, group)
        if os.path.exists(path):
            os.unlink(path)

    def failure(self, name: str) -> dict[str, Any] | None:
        return read_marker(self._marker("failed", name))

    def mark_failed(self, name: str, reason: str) -> None:
        write_json_atomic(self._marker("failed", name), {"shard": name, "reason": reason, "time": time.time()})

    def clear_failed(self, name: str) -> None:
        path = self._marker("failed", name)
        if os.path.exists(path):
            os.unlink(path)

    # locks
    def _lock_path(self, name: str) -> str:
        return os.path.join(self.state, "locks", f"{name}.lock")

    def try_lock(self, name: str, holder: str = "") -> ShardLock | None:
        """Take the shard, or None if another process (of this run or another) holds it."""
        fd = os.open(self._lock_path(name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "holder": holder, "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        return ShardLock(fd)

    def holder(self, name: str) -> dict[str, Any] | None:
        """Who holds the shard now, or None if nobody does."""
        path = self._lock_path(name)
        if not os.path.exists(path):
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(os.pread(fd, 4096, 0) or b"{}")
                except ValueError:
                    return {}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


class SchemaFile:
    """The metadata columns of one output group, fixed by the first shard to finish (see sinks.parquet).

    Shards finish in several processes at once: the first to get here writes the file under
    an exclusive lock, the others read it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fixed(self, proposal: dict[str, str]) -> dict[str, str]:
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.exists(self.path):
                return read_json(self.path)
            write_json_atomic(self.path, proposal)
            return proposal
        finally:
            os.close(fd)
