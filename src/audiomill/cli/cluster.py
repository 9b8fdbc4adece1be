"""The commands of clusters where jobs are submitted by hand: ``slurm-script`` and ``slurm-task``."""

from __future__ import annotations

import argparse
import os
import sys

from audiomill.cli.common import (Formatter, add_slurm, add_tokenize_flags, config_from_args, non_negative,
                                  positive, slurm_from_args)
from audiomill.errors import EXIT_FATAL, EXIT_OK


def add_commands(commands) -> None:
    _add_slurm_script(commands)
    _add_slurm_task(commands)


def _add_slurm_script(commands) -> None:
    ss = commands.add_parser(
        "slurm-script", formatter_class=Formatter, help="write an sbatch array script for a plan",
        description=(
            "Write a ready SLURM array script for the shards of a plan that are not complete, for clusters\n"
            "where jobs may only be submitted with sbatch. With INPUTs, the plan is made (or extended) first,\n"
            "exactly as 'tokenize' would; without, the plan already in --out is used. Each task requeues\n"
            "itself at the time limit; submitting the script again runs whatever is still left."
        ),
    )
    add_tokenize_flags(ss, inputs="*")
    ss.add_argument("--script", default=None, metavar="FILE", help="write the script here (default: stdout)")
    add_slurm(ss)
    ss.set_defaults(func=cmd_slurm_script)


def _add_slurm_task(commands) -> None:
    stask = commands.add_parser("slurm-task", formatter_class=Formatter,
                                description="Run one array task of the plan in OUT (what slurm-script's "
                                            "scripts call).")
    stask.add_argument("out", metavar="OUT")
    stask.add_argument("--task", type=non_negative(int), required=True, metavar="I")
    stask.add_argument("--tasks", type=positive(int), required=True, metavar="N")
    stask.add_argument("--devices", default=None)
    stask.set_defaults(func=cmd_slurm_task)


def cmd_slurm_script(args: argparse.Namespace) -> int:
    from audiomill.errors import UsageError
    from audiomill.runner.slurm import sbatch_script, task_devices
    from audiomill.runner.state import OutputFolder
    from audiomill.runner.tasks import left_to_do
    from audiomill.runner.plan import prepare

    cfg = config_from_args(args, "tokenize")
    cfg.executor = "slurm"
    opts = slurm_from_args(args)
    if cfg.inputs:
        prepare(cfg)
    elif not OutputFolder(cfg.out).exists():
        raise UsageError(f"{cfg.out} holds no plan yet: pass the inputs and tokenize flags to make one")
    folder = OutputFolder(os.path.abspath(cfg.out))
    left = len(left_to_do(folder))
    if not left:
        raise UsageError(f"every shard of {cfg.out} is complete: nothing to submit")
    devices = task_devices(opts) or (cfg.devices if cfg.inputs else folder.plan().config.devices)
    script = sbatch_script(folder.out, opts, min(opts.nodes_max, left), devices)
    if args.script in (None, "-"):
        sys.stdout.write(script)
    else:
        with open(args.script, "w", encoding="utf-8") as handle:
            handle.write(script)
        os.chmod(args.script, 0o755)
        print(f"wrote {args.script}: {min(opts.nodes_max, left)} tasks over {left} shards left; "
              f"submit it with: sbatch {args.script}", file=sys.stderr)
    return EXIT_OK


def cmd_slurm_task(args: argparse.Namespace) -> int:
    from audiomill.runner.slurm import slurm_task

    state = slurm_task(args.out, args.task, args.tasks, args.devices)
    return EXIT_FATAL if state == "crashed" else EXIT_OK
