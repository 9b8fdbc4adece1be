"""Frame counts follow each codec's own arithmetic: at lengths just below, at and just above frame
boundaries (and at odd lengths between), ``num_frames`` is what the model's ``encode`` gives for the
clip alone, and clips batched as ``batch_key`` allows, cut to ``num_frames``, give the codes of
each clip alone. (DAC once lost the last frame of a clip one sample short of a hop multiple.)"""

from __future__ import annotations

import importlib
import random

import pytest
import torch

from audiomill.codecs import all_codecs, load_codec

CODECS = sorted(all_codecs())


def _lengths(hop: int) -> list[int]:
    rng = random.Random(hop)
    return sorted({k * hop + d for k in (2, 7, 20) for d in (-1, 0, 1)} | {rng.randrange(hop, 24 * hop)
                                                                            for _ in range(3)})


def _codes(codec, clips: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Each clip's codes per level from one padded batch, cut to ``num_frames``."""
    longest = max(len(c) for c in clips)
    batch = torch.stack([torch.nn.functional.pad(c, (0, longest - len(c))) for c in clips])
    with torch.inference_mode():
        levels = codec.encode(batch, torch.tensor([len(c) for c in clips]))
    result = []
    for row, clip in enumerate(clips):
        frames = codec.num_frames(len(clip))
        result.append([levels[i][row, ..., : frames[i]] for i in range(len(frames))])
    return result


@pytest.mark.parametrize("name", CODECS)
def test_frames_alone_and_batched_follow_the_codec(name, tmp_path):
    info = all_codecs()[name]
    folder = importlib.import_module(info.module).save_tiny(info, str(tmp_path / "model"))
    codec = load_codec(name, folder, "cpu", {})
    generator = torch.Generator().manual_seed(0)
    clips = [0.1 * torch.randn(n, generator=generator) for n in _lengths(int(codec.alignment))]
    alone = []
    for clip in clips:
        with torch.inference_mode():
            levels = codec.encode(clip[None], torch.tensor([len(clip)]))
        frames = codec.num_frames(len(clip))
        assert [levels[i].shape[-1] for i in range(len(frames))] == frames, (name, len(clip))
        alone.append([level[0] for level in levels[: len(frames)]])
    buckets: dict[int, list[int]] = {}  # as batched: masked codecs' clips all together
    for index, clip in enumerate(clips):
        together = codec.batching == "masked" and getattr(codec, "maskable", lambda n: True)(len(clip))
        buckets.setdefault(-1 if together else codec.batch_key(len(clip)), []).append(index)
    for members in buckets.values():  # each with a copy of itself, so that every bucket is a batch
        together = _codes(codec, [clips[i] for i in members] + [clips[members[0]].clone()])
        for index, codes in zip(members + [members[0]], together):
            for level, (got, expected) in enumerate(zip(codes, alone[index])):
                assert torch.equal(got, expected), (name, len(clips[index]), level)
