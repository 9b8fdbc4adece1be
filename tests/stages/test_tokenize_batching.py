"""How the tokenize stage batches clips of different lengths: exactly by default, and with
``batching = "padded"`` in full batches for a codec that cannot be made blind to padding
(HuBERT units here, whose attention sees it): fuller, with each clip's frames, and codes that
may differ from the exact ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiomill.audio import Audio
from audiomill.codecs import codec_info, load_codec
from audiomill.items import Item
from audiomill.stages.tokenize import TokenizeStage

LENGTHS = [1.3, 2.1, 2.8, 1.7]  # seconds
RATE = 16000


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    from audiomill.codecs.units import save_tiny

    folder = save_tiny(codec_info("hubert-units"), str(tmp_path_factory.mktemp("units")))
    return load_codec("hubert-units", folder, "cpu", {})


def _tokens(stage: TokenizeStage, clips: list[np.ndarray]) -> list[list[list[int]]]:
    files = [(Item(key=f"c{i}", source="-", audio_file=f"c{i}.wav", index=i), Audio(clip, RATE, RATE, 1))
             for i, clip in enumerate(clips)]
    outputs = sorted((o for group in stage.run(files) for o in group), key=lambda o: o.ticket)
    return [o.records[0]["tokens"] for o in outputs]


def test_padded_batching_is_opt_in_fuller_and_keeps_each_clips_frames(units):
    rng = np.random.default_rng(4)
    clips = [(0.1 * rng.standard_normal(int(s * RATE))).astype(np.float32) for s in LENGTHS]
    exact = TokenizeStage(units, 0, 0, 20.0)
    padded = TokenizeStage(units, 0, 0, 20.0, batching="padded")
    assert exact.batch_key(100) != exact.batch_key(101) and padded.batch_key(100) == padded.batch_key(101) == 0
    exact_tokens, padded_tokens = _tokens(exact, clips), _tokens(padded, clips)
    assert exact.counts.batches == len(clips) and padded.counts.batches == 1  # one clip a call, then all at once
    assert padded.counts.summary()["padding_fraction"] > 0
    with torch.inference_mode():
        alone = [units.encode(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))[0][0].tolist() for clip in clips]
    assert exact_tokens == [[row] for row in alone]  # the default: every code as the clip alone
    assert [[len(row) for row in got] for got in padded_tokens] == [[len(row) for row in e] for e in exact_tokens]
    longest = LENGTHS.index(max(LENGTHS))
    assert padded_tokens[longest] == exact_tokens[longest]  # the longest clip has no padding at all


@pytest.mark.parametrize("name", ["encodec-48khz", "encodec-24khz"])
def test_padded_batching_reaches_the_transformers_codecs_and_masked_ones_stay_exact(name, tmp_path):
    """--batching padded once left the transformers codecs without a mask in one-length batches."""
    import importlib

    info = codec_info(name)
    codec = load_codec(name, importlib.import_module(info.module).save_tiny(info, str(tmp_path)), "cpu", {})
    exact, padded = TokenizeStage(codec, 0, 0, 20.0), TokenizeStage(codec, 0, 0, 20.0, batching="padded")
    long, longer = 5 * codec.sample_rate, 5 * codec.sample_rate + 777
    if codec.batching == "masked":  # any lengths either way; clips too short to mask, only with their own length
        assert exact.batch_key(long) == exact.batch_key(longer) == padded.batch_key(longer) == 0
        assert padded.batch_key(10) == codec.batch_key(10) != 0
    else:
        assert exact.batch_key(long) != exact.batch_key(longer)
        assert padded.batch_key(long) == padded.batch_key(longer) == 0
