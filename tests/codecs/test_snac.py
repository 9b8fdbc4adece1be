"""SNAC through the Codec protocol: codes equal the upstream package's, batched, chunked and loaded alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiomill.audio import Audio
from audiomill.codecs import load_codec
from audiomill.corpus import speak, speech, SENTENCES
from audiomill.items import Item
from audiomill.stages.tokenize import TokenizeStage
from tests.conftest import snac_reference_codes


def clip(index: int, rate: int, seconds: float | None = None) -> np.ndarray:
    import soxr

    if seconds is None:
        samples, source_rate = speak(SENTENCES[index % len(SENTENCES)])
    else:
        samples, source_rate = speech(seconds, seed=index)
    return soxr.resample(samples, source_rate, rate).astype(np.float32)


def tokenize(codec, clips: list[np.ndarray], window=0.0, overlap=0.0, batch_seconds=1000.0):
    stage = TokenizeStage(codec, window, overlap, batch_seconds)
    pairs = [(Item(key=str(i), source="s", audio_file=f"{i}.wav", index=i), Audio(c, codec.sample_rate, 0, 1))
             for i, c in enumerate(clips)]
    records = {o.record["key"]: o.record["tokens"] for group in stage.run(iter(pairs)) for o in group}
    return [records[str(i)] for i in range(len(clips))]


def test_codes_equal_upstream_encode(tiny_snac):
    codec = load_codec("snac-24khz", tiny_snac)
    audio = clip(0, 24000)
    assert tokenize(codec, [audio]) == [snac_reference_codes(tiny_snac, audio)]


def test_batched_codes_equal_single_clip_codes(tiny_snac):
    codec = load_codec("snac-24khz", tiny_snac)
    base = clip(1, 24000)
    # lengths that share SNAC's padded length (so they batch together) and lengths that do not
    clips = [base[:n] for n in (40_000, 40_100, 40_900, 20_000, 20_480, 61_000, len(base))]
    assert codec.batch_key(40_000) == codec.batch_key(40_900)
    batched = tokenize(codec, clips)
    single = [snac_reference_codes(tiny_snac, c) for c in clips]
    assert batched == single


def test_zero_padding_a_clip_further_would_change_its_codes(tiny_snac):
    """Why the batching policy exists: padding past SNAC's own multiple changes the last frames."""
    codec = load_codec("snac-24khz", tiny_snac)
    audio = clip(2, 24000)[:40_000]
    alone = snac_reference_codes(tiny_snac, audio)
    padded = np.concatenate([audio, np.zeros(30_000, np.float32)])
    with torch.inference_mode():
        codes = codec.encode(torch.from_numpy(padded)[None], torch.tensor([len(padded)]))
    frames = codec.num_frames(len(audio))
    cut = [level[0, :n].tolist() for level, n in zip(codes, frames)]
    assert cut != alone


@pytest.mark.parametrize("codec_name, fixture", [("snac-24khz", "tiny_snac"), ("snac-32khz", "tiny_snac_32k")])
def test_chunked_long_audio_equals_whole_file_codes(codec_name, fixture, request):
    model_dir = request.getfixturevalue(fixture)
    codec = load_codec(codec_name, model_dir)
    audio = clip(3, codec.sample_rate, seconds=45.0)
    [chunked] = tokenize(codec, [audio], window=10.0, overlap=3.0, batch_seconds=25.0)
    whole = snac_reference_codes(model_dir, audio)
    assert [len(level) for level in chunked] == [len(level) for level in whole]
    assert chunked == whole


def test_windows_longer_than_the_batch_are_encoded_in_batch_sized_windows(tiny_snac):
    """A 30 s window with a 4 s batch budget: encoded as 4 s windows, codes as if whole."""
    codec = load_codec("snac-24khz", tiny_snac)
    audio = clip(5, codec.sample_rate, seconds=30.0)
    [capped] = tokenize(codec, [audio], window=30.0, overlap=4.0, batch_seconds=4.0)
    assert capped == snac_reference_codes(tiny_snac, audio)


def test_decode_round_trip_keeps_the_length(tiny_snac):
    codec = load_codec("snac-24khz", tiny_snac)
    audio = clip(4, 24000)
    with torch.inference_mode():
        codes = codec.encode(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
        wav = codec.decode(codes)
    assert wav.shape[0] == 1 and abs(wav.shape[-1] - len(audio)) < codec.alignment
    assert torch.isfinite(wav).all()


def test_safetensors_checkpoint_loads_like_the_bin_one(tiny_snac, tmp_path):
    import json
    import shutil

    from safetensors.torch import save_file

    state = torch.load(f"{tiny_snac}/pytorch_model.bin", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    shutil.copy(f"{tiny_snac}/config.json", tmp_path / "config.json")
    audio = clip(5, 24000)
    assert tokenize(load_codec("snac-24khz", str(tmp_path)), [audio]) == [snac_reference_codes(tiny_snac, audio)]
    assert json.load(open(tmp_path / "config.json"))["sampling_rate"] == 24000


def test_random_weights_are_the_same_in_every_process():
    a = load_codec("snac-24khz", None)
    b = load_codec("snac-24khz", None)
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), name
