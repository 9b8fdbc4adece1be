"""The duration batcher: budgets, padding bounds, sorting within the look-ahead, nothing lost."""

from __future__ import annotations

import random

import numpy as np

from audiomill.batching import DurationBatcher, Piece

RATE = 16000


def _run(batcher: DurationBatcher, lengths: list[int], buckets: list[int] | None = None):
    batches, peak = [], 0
    for index, length in enumerate(lengths):
        piece = Piece(index, 0, np.zeros(length, np.float32), 0 if buckets is None else buckets[index])
        batches += list(batcher.add(piece))
        peak = max(peak, batcher._pending_samples)
    batches += list(batcher.flush())
    return batches, peak


def test_clips_of_one_length_go_as_soon_as_their_batch_is_full():
    batcher = DurationBatcher(10 * RATE)
    lengths = [2 * RATE] * 5 + [3 * RATE] * 2  # five 2 s clips fill 10 s; the 3 s ones wait
    batches, _ = _run(batcher, lengths[:5])
    assert [len(b) for b in batches] == [5]
    outs = [list(batcher.add(Piece(i, 0, np.zeros(3 * RATE, np.float32), 1))) for i in range(2)]
    assert outs == [[], []] and batcher.pending == 2


def test_mixed_lengths_are_sorted_into_full_batches_within_the_budget_and_padding_bound():
    rng = random.Random(7)
    lengths = [int(rng.uniform(1, 20) * RATE) for _ in range(60)]  # random order, 1 to 20 s
    batcher = DurationBatcher(120 * RATE, max_padding=0.5)
    batches, peak = _run(batcher, lengths)
    assert sorted(p.owner for b in batches for p in b) == list(range(60))  # each clip once
    real = padded = 0
    for batch in batches:
        sizes = [len(p.samples) for p in batch]
        longest = max(sizes)
        assert len(batch) == 1 or len(batch) * longest <= 120 * RATE
        assert len(batch) == 1 or len(batch) * longest - sum(sizes) <= 0.5 * sum(sizes)
        real, padded = real + sum(sizes), padded + len(batch) * longest
    assert 60 / len(batches) >= 7.5 and (padded - real) / real <= 0.2
    assert peak <= 4 * 120 * RATE + 20 * RATE  # the look-ahead bounds what waits


def test_only_pieces_of_one_bucket_batch_together():
    lengths = [RATE * (1 + i % 3) for i in range(30)]
    buckets = [i % 2 for i in range(30)]
    batches, _ = _run(DurationBatcher(8 * RATE), lengths, buckets)
    for batch in batches:
        assert len({buckets[p.owner] for p in batch}) == 1
    assert sorted(p.owner for b in batches for p in b) == list(range(30))


def test_a_bucket_left_holding_one_length_never_gives_a_batch_over_the_budget():
    """Mixed batches take the longest clips first; the short ones left, all of one length, once
    gave a single batch of 13 clips and 4x the budget (and 2x the peak memory on CPU)."""
    short, budget = int(0.75 * RATE), 10 * RATE
    batcher = DurationBatcher(budget, lookahead=2.0)
    lengths = [short if i % 3 else 4 * RATE for i in range(90)]
    batches, _ = _run(batcher, lengths)
    assert sorted(p.owner for b in batches for p in b) == list(range(90))
    assert max(sum(len(p.samples) for p in b) for b in batches) <= budget
    assert max(len(b) for b in batches) == budget // short  # full, and no fuller
