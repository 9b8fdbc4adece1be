"""A run's configuration: the run-wide settings (inputs, output, format, shards, devices, executor,
progress) and the list of its stages.

A stage's own settings are its kind's (see :mod:`audiomill.stages.settings`): ``audiomill tokenize`` makes a
run of one tokenize stage, written into the output folder itself (group ""); ``audiomill run FILE.toml``
reads its stages from the file's ``[[stage]]`` tables, each written into ``<out>/<name>/``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from audiomill.sinks import OutputFormat


# Run-wide fields whose change would change what is written: a run may not reuse an output folder
# made with other values. (A stage's own settings are compared stage by stage.)
OUTPUT_FIELDS = ("files_per_shard", "format", "lines_per_file", "extensions", "audio_column", "text_column", "speaker_column", "id_column",
                 "add")


@dataclass(frozen=True)
class Output:
    """One stage as the plan froze it: its output group ("" for a one-stage run), kind and checked settings."""

    group: str
    kind: str
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Output":
        return cls(data["group"], data["kind"], data.get("settings") or {})


@dataclass
class RunConfig:
    inputs: list[str] = field(default_factory=list)
    out: str = ""
    format: str = "jsonl"  # a registered format's name (with lines_per_file: output_format)
    devices: str = "auto"
    files_per_shard: int = 1000
    lines_per_file: int = 0  # --lines-per-file: a shard's records in files of at most this many (0: one file)
    extensions: list[str] | None = None  # --extensions: the files to read as audio (None: all FFmpeg reads)
    audio_column: str = "audio"  # hf: inputs (see sources.hf)
    text_column: str | None = None
    speaker_column: str | None = None
    id_column: str | None = None
    add: dict[str, str] = field(default_factory=dict)  # --add KEY=VALUE: constants in every record
    decode_workers: int = 0
    retry_errors: bool = False
    start: int | None = None
    end: int | None = None
    progress: str = "auto"
    log_interval: float = 30.0
    log_file: str | None = None
    executor: str = "local"  # local | slurm | ray
    address: str | None = None  # --executor ray: the cluster (None: one on this machine)
    ray_workers: int = 0  # --executor ray: tasks (0: one per GPU of the cluster, else per CPU worker)
    # per stage: {"group", "kind", "settings"} as given, before any check (see audiomill.stages.specs)
    stages: list[dict[str, Any]] = field(default_factory=list)
    # what the plan froze: per stage its output group, kind and checked settings (see runner.plan)
    outputs: list[Output] = field(default_factory=list)

    @property
    def output_format(self) -> OutputFormat:
        return OutputFormat(self.format, self.lines_per_file)

    def to_json(self) -> dict[str, Any]:
        """As the plan keeps it: the format as ``<name>@<N>`` with lines per file."""
        return {**asdict(self), "format": str(self.output_format)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in data.items() if k in names})
        written = OutputFormat.parse(cfg.format)
        cfg.format, cfg.lines_per_file = written.name, written.lines_per_file or cfg.lines_per_file
        cfg.outputs = [o if isinstance(o, Output) else Output.from_json(o) for o in cfg.outputs]
        return cfg

    def columns(self):
        """What the columns of ``hf:`` inputs are."""
        from audiomill.sources.hf import Columns

        return Columns(self.audio_column or "audio", self.text_column, self.speaker_column, self.id_column)
