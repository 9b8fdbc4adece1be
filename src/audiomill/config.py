"""Run configuration: plain dataclasses that mirror the CLI flags one to one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Fields whose change would change what is written: a run may not reuse an output
# folder made with other values.
OUTPUT_FIELDS = ("codec", "codec_options", "model_path", "random_weights", "chunk_seconds", "overlap_seconds",
                 "files_per_shard", "precision", "compile")


@dataclass
class TokenizeConfig:
    inputs: list[str] = field(default_factory=list)
    out: str = ""
    codec: str = "snac-24khz"
    codec_options: dict[str, Any] = field(default_factory=dict)  # --codec-option KEY=VALUE
    model_path: str | None = None
    random_weights: bool = False
    devices: str = "auto"
    chunk_seconds: float = 60.0
    overlap_seconds: float = 4.0
    batch_seconds: float = 0.0  # 0: by device (see runner.local.batch_budget)
    files_per_shard: int = 1000
    decode_workers: int = 0
    precision: str = "fp32"
    compile: bool = False
    retry_errors: bool = False
    start: int | None = None
    end: int | None = None
    progress: str = "auto"
    log_interval: float = 30.0
    log_file: str | None = None
    executor: str = "local"  # local | slurm | ray
    address: str | None = None  # --executor ray: the cluster (None: one on this machine)
    ray_workers: int = 0  # --executor ray: tasks (0: one per GPU of the cluster, else per CPU worker)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TokenizeConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
