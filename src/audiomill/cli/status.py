"""``status`` (the state of every shard of an output folder) and ``shards`` (the shards of some inputs)."""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from audiomill.cli.common import Formatter, add_selection
from audiomill.errors import EXIT_FATAL, EXIT_OK

if TYPE_CHECKING:
    from audiomill.config import RunConfig


def add_commands(commands) -> None:
    _add_status(commands)
    _add_shards(commands)


def _add_status(commands) -> None:
    st = commands.add_parser(
        "status", formatter_class=Formatter, help="what is complete, running, partial, failed or left",
        description="Show the state of every shard of an output folder: complete, damaged (and why), running\n"
                    "(and who holds it), partial (with counts), failed (and why) or not started, and the totals.",
    )
    st.add_argument("out", metavar="OUT", help="the output folder of a tokenize run")
    st.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="check against these inputs instead of the shards of the run's plan")
    add_selection(st)
    st.set_defaults(files_per_shard=None)  # the plan's
    st.add_argument("--check-validity", action="store_true",
                    help="parse every line and check that every key is unique within its shard")
    st.add_argument("--remaining", metavar="FILE", default=None,
                    help="write the inputs of the shards that are not complete to FILE, one a line")
    st.add_argument("--all", action="store_true", help="list complete shards too, not only the others")
    st.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    st.set_defaults(func=cmd_status)


def _add_shards(commands) -> None:
    sh = commands.add_parser("shards", formatter_class=Formatter, help="list the shards of some inputs",
                             description="List the shards that 'tokenize' would make of the inputs.")
    sh.add_argument("inputs", nargs="+", metavar="INPUT", help="as for tokenize")
    add_selection(sh)
    sh.set_defaults(func=cmd_shards)


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from audiomill.errors import UsageError
    from audiomill.runner.state import OutputFolder
    from audiomill.sources.discover import discover_shards
    from audiomill.status import collect, task_states, totals

    folder = OutputFolder(args.out)
    if args.inputs:  # sliced as the plan slices them, unless told otherwise
        config = folder.plan().config if folder.exists() else None
        per_shard = args.files_per_shard or (config.files_per_shard if config else 1000)
        extensions = args.extensions or (config.extensions if config else None)
        shards = discover_shards(args.inputs, per_shard, args.start, args.end, extensions=extensions,
                                 columns=_columns(args, config))
    elif folder.exists():
        shards = folder.shards()
    else:
        raise UsageError(f"{args.out} holds no audiomill run (no _audiomill/plan.json); pass the inputs too")
    states = collect(folder, shards, args.check_validity)
    summary = totals(states)
    tasks = task_states(folder)
    if args.remaining:
        paths: list[str] = []
        for s in states:
            if s.state != "complete" and s.shard.path not in paths:
                paths.append(s.shard.path)
        with open(args.remaining, "w", encoding="utf-8") as handle:
            handle.writelines(p + "\n" for p in paths)
    if args.json:
        print(json.dumps({"totals": summary, "shards": [
            {"shard": s.shard.name, "stage": s.group, "input": s.shard.path, "state": s.state, "files": s.files,
             "errors": s.errors,
             "audio_seconds": s.audio_seconds, "detail": s.detail, "problems": s.problems} for s in states],
            "tasks": tasks}))
    else:
        rows = [s for s in states if args.all or s.state != "complete" or s.problems]
        staged = any(s.group for s in states)
        if rows:
            print(("stage        " if staged else "") +
                  f"{'shard':<24} {'state':<12} {'files':>8} {'errors':>7} {'audio h':>8}  detail")
            for s in rows:
                detail = s.detail or ""
                print((f"{s.group:<12} " if staged else "") + f"{s.shard.name:<24} {s.state:<12} {s.files:>8} "
                      f"{s.errors:>7} {s.audio_seconds / 3600:>8.3f}  {detail}")
                for problem in s.problems[:20]:
                    print(f"    problem: {problem}")
        parts = [f"{summary.get(k, 0)} {k.replace('_', ' ')}" for k in
                 ("complete", "running", "partial", "failed", "not_started")]
        if summary.get("damaged"):
            parts.insert(1, f"{summary['damaged']} damaged")
        print(f"{summary['shards']} shards: {', '.join(parts)}; {summary['files']} files, {summary['errors']} errors, "
              f"{summary['audio_hours']:.3f} h audio" + (f"; {summary['problems']} problems" if args.check_validity
                                                          else ""))
        _print_tasks(tasks, args.all)
        if args.remaining:
            print(f"remaining inputs written to {args.remaining}")
    return EXIT_FATAL if summary["problems"] else EXIT_OK


def _columns(args: argparse.Namespace, config: "RunConfig | None"):
    """The hf: column flags, else the plan's (``config``)."""
    from audiomill.sources.hf import Columns

    return Columns(*(getattr(args, f"{role}_column", None) or getattr(config, f"{role}_column", None)
                     for role in ("audio", "text", "speaker", "id")))


def _print_tasks(tasks: list[dict], show_all: bool) -> None:
    """Cluster tasks: counts by state, then the running, lost and crashed ones (all with --all)."""
    import time

    if not tasks:
        return
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    print("tasks: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    for task in tasks:
        if not show_all and task["state"] not in ("running", "lost", "crashed"):
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(task.get("started", 0)))
        print(f"  {task['executor']} {task['job']:<14} {task['state']:<9} attempt {task.get('attempt', 0)} on "
              f"{task.get('host', '?')} since {since}; log {task.get('log', '?')}")
        if task["state"] == "crashed" and task.get("error"):
            lines = [line for line in task["error"].strip().splitlines() if line.strip()]
            print(f"    error: {lines[0]}")
            if len(lines) > 1:
                print(f"    last traceback line: {lines[-1].strip()}")
        elif task["state"] == "lost":
            print("    its process is gone without a word (killed outright?): its shards are free again")


def cmd_shards(args: argparse.Namespace) -> int:
    from audiomill.sources.discover import discover_shards

    for shard in discover_shards(args.inputs, args.files_per_shard, args.start, args.end, extensions=args.extensions,
                                 columns=_columns(args, None)):
        extent = "" if shard.count is None else f"\t[{shard.start}, {shard.start + shard.count})"
        print(f"{shard.name}\t{shard.kind}\t{shard.path}{extent}")
    return EXIT_OK
