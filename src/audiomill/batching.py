"""Batches built by total audio duration, from clips that give the same codes together.

Each piece carries a bucket (the codec's ``batch_key``): for padding-unsafe codecs
only clips with the same padded length share a bucket, so a batch never changes a
clip's codes. A look-ahead of pending pieces lets buckets fill; when it holds more
than ``lookahead`` times the batch budget in samples (or too many pieces), the
fullest bucket goes, so memory stays bounded however long the shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Piece:
    owner: Any  # whatever the caller needs to route the codes back
    window: int
    samples: np.ndarray
    bucket: int


class DurationBatcher:
    def __init__(self, max_samples: int, max_pieces: int = 256, lookahead: float = 4.0,
                 max_pending_pieces: int = 1024) -> None:
        self.max_samples = max(1, max_samples)
        self.max_pieces = max_pieces
        self.lookahead = lookahead
        self.max_pending_pieces = max_pending_pieces
        self._buckets: dict[int, list[Piece]] = {}
        self._pending = 0
        self._pending_samples = 0

    def add(self, piece: Piece) -> Iterator[list[Piece]]:
        bucket = self._buckets.setdefault(piece.bucket, [])
        bucket.append(piece)
        self._pending += 1
        self._pending_samples += len(piece.samples)
        if self._padded(piece.bucket) >= self.max_samples or len(bucket) >= self.max_pieces:
            yield self._take(piece.bucket)
        while self._buckets and (self._pending_samples > self.lookahead * self.max_samples
                                 or self._pending > self.max_pending_pieces):
            yield self._take(max(self._buckets, key=self._padded))

    @property
    def pending(self) -> int:
        return self._pending

    def flush(self) -> Iterator[list[Piece]]:
        for key in sorted(self._buckets):
            yield self._take(key)

    def _padded(self, key: int) -> int:
        pieces = self._buckets[key]
        return len(pieces) * max(len(p.samples) for p in pieces)

    def _take(self, key: int) -> list[Piece]:
        pieces = self._buckets.pop(key)
        self._pending -= len(pieces)
        self._pending_samples -= sum(len(p.samples) for p in pieces)
        return pieces
