"""A run's stages as given: a one-stage command's settings, or a pipeline file's ``[[stage]]`` tables.

A spec is ``{"group", "kind", "settings"}``: the folder it writes (``""`` for a one-stage command, whose
output is the folder itself), the kind's name and its settings before the kind checks them. A kind that
takes something from the stages before it (transcribe: a vad stage's segments) says so in its ``link``.
"""

from __future__ import annotations

import re
from typing import Any

from audiomill.errors import UsageError
from audiomill.stages import stage_class
from audiomill.stages.settings import from_table, settings_class

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def table_settings(kind: str, table: dict[str, Any]) -> dict[str, Any]:
    """A table's settings for a stage of ``kind``, typed by its declaration (a kind of one's own without one:
    as given, with dashes in keys as underscores)."""
    declared = settings_class(stage_class(kind))
    if declared is None:
        return {key.replace("-", "_"): value for key, value in table.items()}
    return from_table(declared, table, kind)


def pipeline_specs(tables: list[dict[str, Any]], defaults: dict[str, dict[str, Any]] | None = None,
                   ) -> list[dict[str, Any]]:
    """The specs of a pipeline file's ``[[stage]]`` tables; ``defaults`` per kind (a kind with
    ``command_defaults``: its settings given at the file's top or as flags) fill what a table leaves out."""
    specs: list[dict[str, Any]] = []
    for number, table in enumerate(tables, 1):
        table = dict(table)
        kind = str(table.pop("kind", "tokenize"))
        name = table.pop("name", None)
        if not isinstance(name, str) or not _NAME.match(name) or name == "_audiomill":
            raise UsageError(f"stage {number} needs a name (letters, digits, '.', '_', '-'): its output "
                             f"folder is <out>/<name>")
        if any(spec["group"] == name for spec in specs):
            raise UsageError(f"two stages are named {name!r}: each writes <out>/{name}, so names must differ")
        settings = table_settings(kind, table)
        if getattr(stage_class(kind), "command_defaults", False):
            settings = {**(defaults or {}).get(kind, {}), **settings}
        specs.append({"group": name, "kind": kind, "settings": settings})
    return specs


def linked(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each spec with what its kind takes from the stages before it (its ``link``)."""
    done: list[dict[str, Any]] = []
    for spec in specs:
        link = getattr(stage_class(spec["kind"]), "link", None)
        settings = spec["settings"]
        if link is not None:
            settings = link(settings, [(s["kind"], s["settings"]) for s in done])
        done.append({**spec, "settings": settings})
    return done
