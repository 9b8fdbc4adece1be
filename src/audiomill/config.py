"""Run configuration: plain dataclasses that mirror the CLI flags one to one.

A run has one or more stages. ``audiomill tokenize`` makes a run of one tokenize stage from
its codec flags, written into the output folder itself; ``audiomill run FILE.toml`` reads
its stages from the file's ``[[stage]]`` tables, each written into ``<out>/<name>/``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from audiomill.errors import UsageError

# Run-wide fields whose change would change what is written: a run may not reuse an output folder
# made with other values. (A stage's own settings are compared stage by stage.)
OUTPUT_FIELDS = ("files_per_shard", "format", "lines_per_file", "extensions", "audio_column", "text_column", "speaker_column", "id_column",
                 "add")

# The flags of a tokenize stage, as run-wide defaults (a [[stage]] table may set each of them).
TOKENIZE_FIELDS = ("codec", "codec_options", "model_path", "random_weights", "chunk_seconds", "overlap_seconds",
                   "batch_seconds", "max_padding", "batching", "precision", "compile", "layout")

# The flags of a vad stage (audiomill vad).
VAD_FIELDS = ("backend", "threshold", "neg_threshold", "min_speech", "min_silence", "speech_pad", "hop", "segment",
              "min_speech_ratio", "min_duration", "max_duration", "write_audio")

# The flags of a transcribe stage (audiomill transcribe): setting name -> RunConfig field.
TRANSCRIBE_FIELDS = {"backend": "asr_backend", "model_path": "model_path", "language": "language", "task": "task",
                     "grammar": "grammar", "max_tokens_per_second": "max_tokens_per_second",
                     "batch_seconds": "batch_seconds", "max_padding": "max_padding", "precision": "precision",
                     "overwrite_text": "overwrite_text", "drop_flagged": "drop_flagged",
                     "max_chars_per_second": "max_chars_per_second", "no_speech_threshold": "no_speech_threshold"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class RunConfig:
    inputs: list[str] = field(default_factory=list)
    out: str = ""
    format: str = "jsonl"
    codec: str = "snac-24khz"
    codec_options: dict[str, Any] = field(default_factory=dict)  # --codec-option KEY=VALUE
    model_path: str | None = None
    random_weights: bool = False
    devices: str = "auto"
    chunk_seconds: float = 60.0
    overlap_seconds: float = 4.0
    batch_seconds: float = 0.0  # 0: by device (see stages.tokenize)
    max_padding: float = 0.5
    batching: str = "exact"  # or "padded": see stages.tokenize
    files_per_shard: int = 1000
    lines_per_file: int = 0  # --lines-per-file: a shard's records in files of at most this many (0: one file)
    extensions: list[str] | None = None  # --extensions: the files to read as audio (None: all FFmpeg reads)
    audio_column: str = "audio"  # hf: inputs (see sources.hf)
    text_column: str | None = None
    speaker_column: str | None = None
    id_column: str | None = None
    add: dict[str, str] = field(default_factory=dict)  # --add KEY=VALUE: constants in every record
    decode_workers: int = 0
    precision: str = "fp32"
    compile: bool = False
    layout: str | None = None  # --layout: the codes in another tool's fields (see audiomill.layouts)
    retry_errors: bool = False
    start: int | None = None
    end: int | None = None
    progress: str = "auto"
    log_interval: float = 30.0
    log_file: str | None = None
    executor: str = "local"  # local | slurm | ray
    address: str | None = None  # --executor ray: the cluster (None: one on this machine)
    ray_workers: int = 0  # --executor ray: tasks (0: one per GPU of the cluster, else per CPU worker)
    command: str = "tokenize"  # the one-stage command (tokenize, vad, transcribe) when there are no [[stage]] tables
    backend: str = "silero"  # audiomill vad's flags (see stages.vad)
    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech: float = 0.25
    min_silence: float = 0.1
    speech_pad: float = 0.03
    hop: int = 256
    segment: str | None = None
    min_speech_ratio: float = 0.0
    min_duration: float = 0.0
    max_duration: float = 0.0
    write_audio: str | None = None
    asr_backend: str = "whisper"  # audiomill transcribe's flags (see stages.transcribe)
    language: str | None = None
    task: str = "transcribe"
    grammar: str | None = None
    max_tokens_per_second: float = 12.0
    overwrite_text: bool = False
    drop_flagged: bool = False
    max_chars_per_second: float = 25.0
    no_speech_threshold: float = 0.6
    stages: list[dict[str, Any]] = field(default_factory=list)  # [[stage]] tables of a pipeline file
    # what the plan froze: per stage its output group, kind and checked settings (see runner.plan)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def columns(self):
        """What the columns of ``hf:`` inputs are."""
        from audiomill.sources.hf import Columns

        return Columns(self.audio_column or "audio", self.text_column, self.speaker_column, self.id_column)

    def stage_specs(self) -> list[dict[str, Any]]:
        """Per stage: ``{"group", "kind", "settings"}``, before any check (see runner.plan.prepare)."""
        if not self.stages and self.command == "vad":
            return [{"group": "", "kind": "vad", "settings": {k: getattr(self, k) for k in VAD_FIELDS}}]
        if not self.stages and self.command == "transcribe":
            return [{"group": "", "kind": "transcribe",
                     "settings": {k: getattr(self, f) for k, f in TRANSCRIBE_FIELDS.items()}}]
        if not self.stages:
            return [{"group": "", "kind": "tokenize", "settings": {k: getattr(self, k) for k in TOKENIZE_FIELDS}}]
        specs = []
        for number, table in enumerate(self.stages, 1):
            table = {key.replace("-", "_"): value for key, value in table.items()}
            kind = str(table.pop("kind", "tokenize"))
            name = table.pop("name", None)
            if not isinstance(name, str) or not _NAME.match(name) or name == "_audiomill":
                raise UsageError(f"stage {number} needs a name (letters, digits, '.', '_', '-'): its output "
                                 f"folder is <out>/<name>")
            if any(spec["group"] == name for spec in specs):
                raise UsageError(f"two stages are named {name!r}: each writes <out>/{name}, so names must differ")
            if kind == "tokenize":
                if "codec_option" in table:
                    table["codec_options"] = table.pop("codec_option")
                if isinstance(table.get("codec_options"), dict):
                    table["codec_options"] = codec_options_of(table["codec_options"])
                table = {**{k: getattr(self, k) for k in TOKENIZE_FIELDS}, **table}
            if kind == "transcribe" and "vad" not in table:  # the segments of the vad stage before it, if any
                earlier = [spec for spec in specs if spec["kind"] == "vad"]
                if earlier:
                    table["vad"] = dict(earlier[-1]["settings"])
            specs.append({"group": name, "kind": kind, "settings": table})
        return specs


def codec_options_of(values: dict[str, Any] | list[str]) -> dict[str, float | str]:
    """``["bandwidth=6"]`` or ``{"bandwidth": 6}`` -> ``{"bandwidth": 6.0}``: numbers become floats."""
    pairs = values if isinstance(values, list) else [f"{k}={v}" for k, v in values.items()]
    options: dict[str, float | str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--codec-option {pair!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = float(value)
        except ValueError:
            options[key.strip()] = value.strip()
    return options
