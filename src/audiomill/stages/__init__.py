"""Stages: model-backed transforms over batches of decoded items.

A stage takes ``(item, audio or error reason)`` pairs in shard order and yields
groups of :class:`Output`; each group is one flush of the sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audiomill.items import Item


@dataclass
class Output:
    item: Item
    record: dict[str, Any] | None = None
    error: str | None = None
    audio_seconds: float = 0.0
