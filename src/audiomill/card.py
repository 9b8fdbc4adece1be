"""The output folder as a Hugging Face dataset: its card (``README.md``), and what ``push`` uploads.

When a run ends, ``<out>/README.md`` is written from the complete shards: YAML front matter with
one config per stage (a one-stage run's is ``default``), whose ``train`` split names the final
record files of that stage's complete shards, so that ``datasets.load_dataset(OUT)`` loads them
and nothing half written. Error records, state and journals are never part of a config.

:func:`finished_files` is what ``audiomill push`` uploads: the card, and per complete shard and
stage the files its done marker names, its errors file, and a stage's summary files.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from audiomill import __version__

if TYPE_CHECKING:
    from audiomill.config import Output

CARD = "README.md"


def _complete_files(folder, group: str) -> list[str]:
    """Final record files of the group's complete shards, relative to ``out``, in the plan's order."""
    from audiomill.sinks import final_name

    fmt = folder.format()
    groups = folder.groups()
    files = []
    where = folder.group_dir(group)
    for shard in folder.shards():
        if not folder.complete(shard.name, groups, fmt):
            continue
        final = os.path.join(where, final_name(shard.name, fmt))
        named = fmt.parts(final) if getattr(fmt, "data_in_parts", False) else [final]  # (--lines-per-file)
        files += [os.path.relpath(path, folder.out) for path in named]
    return files


def card_text(folder) -> str:
    plan = folder.plan()
    outputs = plan.outputs
    lines = ["---", "configs:"]
    described = []
    for number, output in enumerate(outputs):
        files = _complete_files(folder, output.group)
        if not files:
            continue
        lines.append(f"- config_name: {json.dumps(output.group or 'default')}")
        if number == 0:
            lines.append("  default: true")
        lines += ["  data_files:", "  - split: train", "    path:"]
        lines += [f"    - {json.dumps(path)}" for path in files]
        described.append(_describe(output, len(files)))
    if len(lines) == 2:
        lines[1] = "configs: []"
    lines += ["tags:", "- audio", "- audiomill", "---", "",
              "# Records made by audiomill", "",
              f"Made by [audiomill](https://pypi.org/project/audiomill/) {__version__} from "
              f"{len(plan.shards)} shards ({plan.format} files):", ""]
    lines += [f"- {line}" for line in described]
    lines += ["", "Records of files that could not be read are in `*.errors.jsonl`, beside each shard's file; "
                  "they are not part of any config.", ""]
    return "\n".join(lines)


def _describe(output: "Output", shards: int) -> str:
    """A stage's line: its kind's ``describe``, else its ``label`` (the kind's name) and the values of the
    settings it declares ``shown``."""
    from audiomill.stages import stage_class
    from audiomill.stages.settings import declared, settings_class, shown

    settings = output.settings
    kind = stage_class(output.kind)
    name = f"`{output.group}`: " if output.group else ""
    if hasattr(kind, "describe"):
        what = kind.describe(settings)
    else:
        declaration = settings_class(kind)
        values = [shown(settings.get(spec.name)) for spec, info in declared(declaration) if info.shown] \
            if declaration else []
        what = getattr(kind, "label", output.kind) + (f" ({', '.join(values)})" if values else "")
    return f"{name}{what}, {shards} complete shards"


def write_card(folder) -> str:
    """``<out>/README.md`` for the complete shards, written whole and renamed into place."""
    from audiomill.files import write_atomic

    path = os.path.join(folder.out, CARD)
    write_atomic(path, card_text(folder))
    return path


def finished_files(folder) -> list[str]:
    """What ``push`` uploads, relative to ``out``: the card, then each complete shard's files in every
    stage (those its done marker names, its errors file), each stage's summary files and what a stage
    kind's ``published_files`` names (files its ``after_run`` wrote outside its folder)."""
    from audiomill.sinks import errors_name, final_name
    from audiomill.stages import stage_class

    fmt = folder.format()
    groups = folder.groups()
    files = [CARD] if os.path.isfile(os.path.join(folder.out, CARD)) else []
    for group in groups:
        where = folder.group_dir(group)
        for shard in folder.shards():
            if not folder.complete(shard.name, groups, fmt):
                continue
            stats = folder.done_stats(shard.name, group) or {}
            named = [final_name(shard.name, fmt)]
            if stats.get("errors"):
                named.append(errors_name(shard.name))
            members = stats.get("members")
            if isinstance(members, dict) and members.get("file"):
                named.append(members["file"])
            parts = getattr(fmt, "parts", None)  # files a format writes beside its final one (npy)
            if parts is not None:
                named += [os.path.relpath(p, where) for p in parts(os.path.join(where, named[0]))]
            files += [os.path.relpath(os.path.join(where, name), folder.out) for name in named]
        kind = stage_class(folder.plan().output(group).kind)
        for summary in getattr(kind, "summary_files", ()):
            if os.path.isfile(os.path.join(where, summary)):
                files.append(os.path.relpath(os.path.join(where, summary), folder.out))
        if hasattr(kind, "published_files"):  # what after_run wrote elsewhere (IndexTTS2's layout at the top)
            files += kind.published_files(folder, group)
    return files
