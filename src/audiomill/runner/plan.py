"""Making the plan of a run: check everything that can fail fast, then freeze it in the output folder.

Every stage is checked before anything is written (options, sample rate, the weights'
layout, installed extras: each stage's ``check`` loads what its workers will load), and
so are the format, the inputs and the devices. A refused run leaves ``--out`` as it found
it. The plan is then written, or an existing one extended, under a lock, so that two
launches at once on one folder cannot both write it.

``plan.json`` holds the shards, the format, every stage's output group, kind and checked
settings, the run's config and the versions of the packages that make the output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib
import os
import platform
import shutil
import time
from typing import Any

from audiomill import __version__
from audiomill.config import OUTPUT_FIELDS, Output, RunConfig
from audiomill.errors import UsageError
from audiomill.items import Shard
from audiomill.runner.state import OutputFolder, Plan

def prepare(cfg: RunConfig) -> list[Shard]:
    """Check ``cfg`` completely, then freeze (or extend) its plan; returns the shards to run.

    ``cfg.out`` and the stages' settings are resolved in place (``cfg.outputs``)."""
    from audiomill.sinks import get_format
    from audiomill.sources.discover import discover_shards, expand_inputs
    from audiomill.stages import stage_class
    from audiomill.stages.specs import linked

    cfg.out = os.path.abspath(cfg.out)
    if cfg.executor != "local" and cfg.retry_errors:
        raise UsageError("--retry-errors works with --executor local only: run it on one node, then go on "
                         f"with --executor {cfg.executor}")
    get_format(cfg.output_format)
    expand_inputs(cfg.inputs)
    if cfg.files_per_shard < 1:
        raise UsageError("--files-per-shard must be at least 1")
    outputs = []
    for spec in linked(cfg.stages):
        cls = stage_class(spec["kind"])
        for package in getattr(cls, "needs", ()):
            try:
                importlib.import_module(package)
            except ImportError as exc:
                raise UsageError(f"stage {spec['group'] or spec['kind']} needs the package {package} ({exc})") from None
        outputs.append(Output(spec["group"], spec["kind"], cls.check(spec["settings"])))
    cfg.outputs = outputs
    if cfg.executor == "local":  # a cluster's nodes have their own devices
        from audiomill.runner.local import parse_devices

        parse_devices(cfg.devices)
    _check_writable(cfg.out)
    folder = OutputFolder(cfg.out)
    existed = os.path.exists(cfg.out)
    with _plan_lock(folder):
        planned = folder.exists()
        if planned:  # before the inputs are listed and compared with the plan's listing
            _same_output_fields(folder, cfg)
        try:  # folders and manifests are listed into the plan, once: see sources.listing
            listing = os.path.join(folder.state, "listing")
            os.makedirs(listing, exist_ok=True)
            shards = discover_shards(cfg.inputs, cfg.files_per_shard, cfg.start, cfg.end, listing, cfg.extensions,
                                     cfg.columns(), cfg.add)
            _freeze(folder, cfg, shards)
        except BaseException:
            if not planned:  # leave --out as it was found
                shutil.rmtree(cfg.out if not existed else folder.state, ignore_errors=True)
            raise
    folder.create(tuple(o.group for o in outputs))
    return shards


def _check_writable(out: str) -> None:
    """``out`` can be made and written, found without making anything."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a folder")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to --out {out}: {existing} is not writable")


@contextlib.contextmanager
def _plan_lock(folder: OutputFolder):
    try:
        os.makedirs(folder.state, exist_ok=True)
        fd = os.open(os.path.join(folder.state, "plan.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write to --out {folder.out}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _freeze(folder: OutputFolder, cfg: RunConfig, shards: list[Shard]) -> None:
    if not folder.exists():
        folder.write_plan(Plan(format=cfg.output_format, outputs=tuple(cfg.outputs), config=cfg,
                               shards=tuple(shards), created=time.time(), versions=_versions()))
        return
    plan = folder.plan()  # its run-wide output settings are those of cfg (checked in prepare)
    outputs = _merge_outputs(cfg.out, list(plan.outputs), cfg.outputs)
    known = {s.name: s for s in plan.shards}
    for shard in shards:
        if shard.name in known and known[shard.name] != shard:
            raise UsageError(f"shard {shard.name} of {cfg.out} came from {known[shard.name].path}, "
                             f"not {shard.path}: use another --out")
        known.setdefault(shard.name, shard)
    cfg.outputs = outputs
    # what writes the output is checked equal above; the rest of the config is this launch's
    folder.write_plan(dataclasses.replace(plan, format=cfg.output_format, outputs=tuple(outputs), config=cfg,
                                          shards=tuple(known.values())))


def _same_output_fields(folder: OutputFolder, cfg: RunConfig) -> None:
    """A run on an existing plan has its run-wide settings that decide what is written."""
    old_config = folder.plan().config
    for name in OUTPUT_FIELDS:
        old, new = getattr(old_config, name), getattr(cfg, name)
        if old != new:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{cfg.out} was made with {_shown(flag, old)}, not {_shown(flag, new)}: use another "
                             f"--out, or the same {flag}")


def _shown(flag: str, value: Any) -> str:
    if value is None:
        return f"the default {flag}"
    if isinstance(value, dict):
        return " ".join(f"{flag} {k}={v}" for k, v in value.items()) if value else f"no {flag}"
    return f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}"


def _merge_outputs(out: str, old: list[Output], new: list[Output]) -> list[Output]:
    """The plan's stages with this launch's: each one unchanged, or new (it runs on every shard)."""
    old_groups = {o.group: o for o in old}
    new_groups = {o.group for o in new}
    if ("" in old_groups) != ("" in new_groups):
        made = "one 'audiomill tokenize' stage" if "" in old_groups else "a pipeline of named stages"
        raise UsageError(f"{out} was made by {made}: use another --out")
    missing = [g for g in old_groups if g not in new_groups]
    if missing:
        raise UsageError(f"{out} has the stage(s) {', '.join(missing)}, which this run lacks: keep them in the "
                         f"pipeline (they are skipped where complete), or use another --out")
    merged = []
    for output in new:
        before = old_groups.get(output.group)
        if before is not None:
            _same_stage(out, before, output)
        merged.append(output)  # runtime settings (batch size) are this launch's
    return merged


def _same_stage(out: str, old: Output, new: Output) -> None:
    """A stage already in the plan writes what it wrote: only its runtime settings (the batch size) and where
    the weights were found (which follows from --model-path) may change."""
    from audiomill.stages import stage_class
    from audiomill.stages.settings import changed, settings_class, shown

    where = f"stage {new.group} of " if new.group else ""
    if old.kind != new.kind:
        raise UsageError(f"{where}{out} was made by a {old.kind} stage, not {new.kind}: use another --out")
    cls = stage_class(new.kind)
    difference = changed(settings_class(cls), old.settings, new.settings,
                         ignore=set(getattr(cls, "runtime_settings", ())) | {"weights"})
    if difference is not None:
        flag, before, now = difference
        raise UsageError(f"{where}{out} was made with {flag} {shown(before)}, not {shown(now)}: use another --out, "
                         f"or the same {flag}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import numpy

    found = {"audiomill": __version__, "python": platform.python_version(), "numpy": numpy.__version__}
    for package in ("torch", "snac", "transformers", "soundfile", "soxr", "av", "pyarrow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
