"""Sinks: one output file per (stage, shard), written through a journal and finished atomically.

A stage's records first go, append-only, to the shard's journal (:mod:`.journal`), which
survives a kill at any moment; finishing the shard writes the final file in the chosen
format, in the shard's order, to a temporary name renamed into place. Formats register
themselves by name (``jsonl``, ``jsonl.gz``, ``parquet``, ``wds``, ``npy``, and those of installed packages under
the entry points ``audiomill.formats``), and that name is written into
the plan, so every reader (status, resynth, retries) finds the files through here.
A sink knows records, keys and declared field types, never codecs or sources.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol

from audiomill.errors import UsageError

# Field types a stage declares for its records (``Stage.fields``); formats with a schema
# (Parquet) map them to their own types, JSON formats ignore them. ``codes<int16>`` and
# ``codes<int32>`` are a record's codes (a list of levels or codebooks, stored as
# ``list<list<...>>``) and ``shape`` the length of each level (``list<int32>``): formats that keep
# codes apart (``npy``, ``wds``) find them by these types, never by a field's name.
FIELD_TYPES = ("string", "int64", "float64", "bool", "list<string>",
               "list<int16>", "list<int32>", "list<float32>", "list<float64>",
               "list<list<int16>>", "list<list<int32>>", "list<list<float32>>", "list<list<float64>>",
               "codes<int16>", "codes<int32>", "shape")
CODES = "codes<"  # the prefix of the codes' types
SHAPE = "shape"


def storage_type(spec: str) -> str:
    """The plain type a field type is stored as (``codes<int16>`` is ``list<list<int16>>``)."""
    if spec.startswith(CODES):
        return f"list<list<{spec[len(CODES):-1]}>>"
    return "list<int32>" if spec == SHAPE else spec


def codes_field(fields: dict[str, str]) -> tuple[str, str] | None:
    """The field that holds a record's codes and their integer type, from the declared types (None if none)."""
    for name, spec in fields.items():
        if spec.startswith(CODES):
            return name, spec[len(CODES):-1]
    return None


def shape_field(fields: dict[str, str]) -> str | None:
    """The field that holds the length of each level of the codes (None if none is declared)."""
    return next((name for name, spec in fields.items() if spec == SHAPE), None)


class Format(Protocol):
    """One way of writing a shard's records to a file."""

    name: str
    extension: str  # of the final file: ``<shard>.<extension>``
    needs: str  # the package it imports ("" for none), checked before a run starts

    def write(self, path: str, records: Iterable[dict[str, Any]], fields: dict[str, str],
              schema: "SchemaStore") -> None:
        """Write ``records`` (in order) to ``path``, a new file; flush it to disk."""

    def read(self, path: str, fields: dict[str, str]) -> Iterator[dict[str, Any]]:
        """The records of a final file, in order; ``fields`` are the declared types it was written with."""


class SchemaStore(Protocol):
    """Where an output group keeps the columns its first finished file fixed (see parquet)."""

    def fixed(self, proposal: dict[str, str]) -> dict[str, str]:
        """The group's metadata columns: those already fixed, else ``proposal``, fixed from now on."""


_FORMATS = {"jsonl": "audiomill.sinks.jsonl", "jsonl.gz": "audiomill.sinks.jsonl", "parquet": "audiomill.sinks.parquet",
            "wds": "audiomill.sinks.wds", "npy": "audiomill.sinks.npy"}
_ROTATED = "audiomill.sinks.rotated"  # --lines-per-file: any of them in parts


ENTRY_POINTS = "audiomill.formats"  # installed packages register formats here: name = "module" (its FORMATS[name])


def _registry() -> dict[str, str]:
    """audiomill's formats, then those of installed packages (entry points of ``audiomill.formats``)."""
    from importlib.metadata import entry_points

    found = dict(_FORMATS)
    for point in entry_points(group=ENTRY_POINTS):
        found.setdefault(point.name, point.value)
    return found


def format_names() -> tuple[str, ...]:
    return tuple(_registry())


class OutputFormat(NamedTuple):
    """A run's format: its registered name and the records per file (``--lines-per-file``; 0: one file a
    shard). Written ``<name>@<N>`` in the plan (``str()``), read back by :meth:`parse`."""

    name: str
    lines_per_file: int = 0

    @classmethod
    def parse(cls, text: str) -> "OutputFormat":
        base, at, lines = text.rpartition("@")
        if not at:
            return cls(text)
        if not lines.isdigit() or int(lines) < 1:
            raise UsageError(f"--lines-per-file {lines}: expected a number of records >= 1")
        return cls(base, int(lines))

    def __str__(self) -> str:
        return f"{self.name}@{self.lines_per_file}" if self.lines_per_file else self.name


def get_format(spec: "str | OutputFormat") -> Format:
    """The format registered under a name; fails in one line if it is unknown or its package is missing.
    With lines per file (``OutputFormat``, or a name written ``<name>@<N>``) it is that format in files of at
    most N records (``--lines-per-file``, see :mod:`.rotated`)."""
    name, lines = OutputFormat.parse(spec) if isinstance(spec, str) else spec
    if lines:  # (loaded by name, as the formats are: the module imports this one)
        return importlib.import_module(_ROTATED).RotatedFormat(get_format(name), lines)
    known = _FORMATS if name in _FORMATS else _registry()
    if name not in known:
        raise UsageError(f"unknown format {name!r}; known: {', '.join(known)}")
    module = importlib.import_module(known[name])
    fmt = module.FORMATS[name]
    if fmt.needs:
        try:
            importlib.import_module(fmt.needs)
        except ImportError as exc:
            raise UsageError(f"--format {name} needs {fmt.needs} ({exc}): pip install 'audiomill[{name}]'") from None
    return fmt


def final_name(shard: str, fmt: Format) -> str:
    return f"{shard}.{fmt.extension}"


def errors_name(shard: str) -> str:
    """Error records are JSON Lines in every format: few, and read by people."""
    return f"{shard}.errors.jsonl"


def journal_name(shard: str, fmt: Format) -> str:
    return f"{shard}.{fmt.extension}.partial"
