"""The tokenize stage: decoded audio in, codec codes out, one record per file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiomill.audio import Audio
from audiomill.batching import DurationBatcher, Piece
from audiomill.chunking import Window, plan_windows, stitch
from audiomill.codecs import Codec
from audiomill.items import Item
from audiomill.stages import Output

log = logging.getLogger(__name__)

RESERVED = ("key", "tar_file", "audio_file", "num_samples", "sample_rate", "codec", "tokens", "token_shape", "error")


@dataclass
class _Pending:
    item: Item
    num_samples: int
    windows: list[Window]
    codes: list[list[np.ndarray] | None] = field(default_factory=list)
    remaining: int = 0
    failed: bool = False


def make_record(item: Item, codec_name: str, sample_rate: int, num_samples: int, tokens: list[list[int]]) -> dict:
    record: dict[str, Any] = {
        "key": item.key,
        "tar_file": item.source,
        "audio_file": item.audio_file,
        "num_samples": num_samples,
        "sample_rate": sample_rate,
        "codec": codec_name,
        "tokens": tokens,
        "token_shape": [len(level) for level in tokens],
    }
    clashes = {k: v for k, v in item.meta.items() if k in RESERVED}
    record.update((k, v) for k, v in item.meta.items() if k not in RESERVED)
    if clashes:
        record["meta"] = clashes
    return record


class TokenizeStage:
    """Windows long files, batches windows by duration within codes-preserving buckets, encodes, stitches."""

    def __init__(self, codec: Codec, window_seconds: float, overlap_seconds: float, batch_seconds: float) -> None:
        self.codec = codec
        rate = codec.sample_rate
        self.window = int(window_seconds * rate) if window_seconds > 0 else 0
        self.overlap = int(overlap_seconds * rate)
        self.batch_samples = max(1, int(batch_seconds * rate))

    def run(self, decoded: Iterator[tuple[Item, Audio | str]]) -> Iterator[list[Output]]:
        batcher = DurationBatcher(self.batch_samples)
        for item, audio in decoded:
            if isinstance(audio, str):
                yield [Output(item, error=audio)]
                continue
            samples = audio.samples
            windows = plan_windows(len(samples), self.window, self.overlap, self.codec.alignment)
            pending = _Pending(item, len(samples), windows, [None] * len(windows), len(windows))
            for number, window in enumerate(windows):
                piece_samples = samples[window.start : window.end]
                piece = Piece(pending, number, piece_samples, self.codec.batch_key(len(piece_samples)))
                for batch in batcher.add(piece):
                    yield self._encode(batch)
        for batch in batcher.flush():
            yield self._encode(batch)

    def _encode(self, batch: list[Piece]) -> list[Output]:
        outputs: list[Output] = []
        for piece, codes in self._encode_splitting(batch):
            pending: _Pending = piece.owner
            if pending.failed:
                continue
            if isinstance(codes, str):
                pending.failed = True
                outputs.append(Output(pending.item, error=codes))
                continue
            pending.codes[piece.window] = codes
            pending.remaining -= 1
            if pending.remaining == 0:
                outputs.append(self._finish(pending))
        return outputs

    def _encode_splitting(self, batch: list[Piece]) -> list[tuple[Piece, list[np.ndarray] | str]]:
        """Encode a batch; if it fails, encode each half, down to single pieces, which then fail alone."""
        try:
            return list(zip(batch, self._encode_batch(batch)))
        except Exception as exc:  # an out-of-memory or a model error: narrow it down
            if len(batch) == 1:
                log.warning("encoding %s failed: %s", batch[0].owner.item.key, exc)
                return [(batch[0], f"encoding failed: {type(exc).__name__}: {exc}")]
            half = len(batch) // 2
            return self._encode_splitting(batch[:half]) + self._encode_splitting(batch[half:])

    def _encode_batch(self, batch: list[Piece]) -> list[list[np.ndarray]]:
        import torch

        longest = max(len(p.samples) for p in batch)
        padded = -(-longest // self.codec.alignment) * self.codec.alignment if not self.codec.padding_safe else longest
        wav = np.zeros((len(batch), padded), dtype=np.float32)
        for row, piece in enumerate(batch):
            wav[row, : len(piece.samples)] = piece.samples
        lengths = torch.tensor([len(p.samples) for p in batch])
        codes = self.codec.encode(torch.from_numpy(wav), lengths)
        arrays = [level.cpu().numpy() for level in codes]
        results = []
        for row, piece in enumerate(batch):
            frames = self.codec.num_frames(len(piece.samples))
            results.append([arrays[level][row, ..., : frames[level]] for level in range(len(arrays))])
        return results

    def _finish(self, pending: _Pending) -> Output:
        levels = stitch(pending.windows, pending.codes, self.codec.frame_hops())
        tokens: list[list[int]] = []
        for level in levels:
            if level.ndim == 1:
                tokens.append(level.tolist())
            else:  # [codebooks, frames]: one list per codebook
                tokens.extend(row.tolist() for row in level)
        record = make_record(pending.item, self.codec.name, self.codec.sample_rate, pending.num_samples, tokens)
        return Output(pending.item, record=record, audio_seconds=pending.num_samples / self.codec.sample_rate)
