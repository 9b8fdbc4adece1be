"""Batches built by total audio duration, from clips that give the same codes together.

Each piece carries a bucket (the codec's ``batch_key``): only pieces of one bucket batch
together, so a batch never changes a clip's codes. For a codec that takes clips of any length
(``batch_key`` 0, see :mod:`audiomill.codecs.masking`), pieces are sorted by length within
a look-ahead, so that a batch holds clips of close lengths and its padding stays small.
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
    samples: np.ndarray  # or a window's features (audiomill.features.Features): len() is samples either way
    bucket: int


MAX_PADDING = 0.5  # padding a batch may hold, a share of its pieces' own samples (--max-padding)


class DurationBatcher:
    """Pieces in, batches out: each batch at most ``max_samples`` padded samples (its clip count
    times its longest clip), ``max_pieces`` clips, and ``max_padding`` padding (a share of its
    clips' own samples), from pieces of one bucket.

    A bucket whose pieces all have one length goes as soon as it is full. Pieces of different
    lengths wait in a look-ahead of up to ``lookahead`` batches' worth of samples (or
    ``max_pending_pieces``): when it overflows, the bucket holding the most audio gives its
    longest pieces, sorted, as one batch (:meth:`_batch`); so lengths that are close batch
    together, and memory stays bounded however long the shard.
    """

    def __init__(self, max_samples: int, max_pieces: int = 256, lookahead: float = 4.0,
                 max_pending_pieces: int = 1024, max_padding: float = MAX_PADDING) -> None:
        self.max_samples = max(1, max_samples)
        self.max_pieces = max_pieces
        self.lookahead = lookahead
        self.max_pending_pieces = max_pending_pieces
        self.max_padding = max_padding
        self._buckets: dict[int, list[Piece]] = {}
        self._pending = 0
        self._pending_samples = 0

    def add(self, piece: Piece) -> Iterator[list[Piece]]:
        bucket = self._buckets.setdefault(piece.bucket, [])
        bucket.append(piece)
        self._pending += 1
        self._pending_samples += len(piece.samples)
        length = len(piece.samples)
        full = min(self.max_pieces, max(1, self.max_samples // length))  # clips of this length a batch holds
        if len(bucket) >= full and all(len(p.samples) == length for p in bucket):
            # (a bucket left holding one length after mixed batches were taken may hold more than that)
            while piece.bucket in self._buckets and len(self._buckets[piece.bucket]) >= full:
                yield self._take(piece.bucket, self._buckets[piece.bucket][:full])
        while self._buckets and (self._pending_samples > self.lookahead * self.max_samples
                                 or self._pending > self.max_pending_pieces):
            key = max(self._buckets, key=lambda k: sum(len(p.samples) for p in self._buckets[k]))
            yield self._take(key, self._batch(self._buckets[key]))

    @property
    def pending(self) -> int:
        return self._pending

    def flush(self) -> Iterator[list[Piece]]:
        """Every pending piece, in batches (longest first within each bucket)."""
        for key in sorted(self._buckets):
            while key in self._buckets:
                yield self._take(key, self._batch(self._buckets[key]))

    def _batch(self, pieces: list[Piece]) -> list[Piece]:
        """The longest pieces, and after them as many of the next longest as the budget, the clip
        count and the padding share allow."""
        ranked = sorted(pieces, key=lambda p: -len(p.samples))
        longest = len(ranked[0].samples)
        batch, real = [ranked[0]], longest
        for piece in ranked[1:]:
            count, total = len(batch) + 1, real + len(piece.samples)
            if count * longest > self.max_samples or count > self.max_pieces:
                break
            if count * longest - total > self.max_padding * total:
                break
            batch.append(piece)
            real = total
        return batch

    def _take(self, key: int, batch: list[Piece]) -> list[Piece]:
        chosen = {id(p) for p in batch}
        left = [p for p in self._buckets[key] if id(p) not in chosen]
        if left:
            self._buckets[key] = left
        else:
            del self._buckets[key]
        self._pending -= len(batch)
        self._pending_samples -= sum(len(p.samples) for p in batch)
        return batch
