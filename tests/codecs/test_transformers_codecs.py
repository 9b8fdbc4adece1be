"""EnCodec, DAC, Mimi, Higgs and X-codec2 through the Codec protocol, against transformers' own models.

Each test builds the codec's tiny random configuration, saves it in its hub repository's
layout (config.json + model.safetensors) and loads it through ``load_codec`` as users do.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiomill.audio import Audio
from audiomill.codecs import codec_info, load_codec
from audiomill.codecs.hf import FAMILIES, model_class, save_random
from audiomill.corpus import speech
from audiomill.items import Item
from audiomill.stages.tokenize import TokenizeStage

CODECS = ["encodec-24khz", "encodec-48khz", "dac-16khz", "dac-24khz", "dac-44khz", "mimi", "higgs-audio-v2", "xcodec2"]
# Share of codes of chunked audio equal to whole-file codes. Convolutional and causal codecs: all
# but a few near-ties. Higgs' semantic branch is HuBERT, whose attention spans the whole input:
# a window's codes cannot equal the whole file's, and with random weights (attention averaging
# everything) they agree on 0.55-0.59 of frames per codebook; misaligned stitching would give ~0.001.
# X-codec2 normalises its filter banks over each window and its w2v-BERT attends to all of it; a
# code (8 FSQ digits) matches only if every digit does: 0.33 of frames, 0.85 of digits measured.
CHUNK_AGREEMENT = {"higgs-audio-v2": 0.5, "xcodec2": 0.25}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """codec name -> folder with the tiny random model in the hub layout (made once per module)."""
    folders: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in folders:
            folders[name] = save_random(codec_info(name), str(tmp_path_factory.mktemp(name)))
        return folders[name]

    return get


def audio(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    import soxr

    samples, source_rate = speech(seconds, seed=seed)
    return soxr.resample(samples, source_rate, rate).astype(np.float32)


def run_stage(codec, clips, window=0.0, overlap=0.0, batch_seconds=1000.0):
    """The clips through TokenizeStage: their records in order, and the clip count of each encode call."""
    stage = TokenizeStage(codec, window, overlap, batch_seconds)
    calls = []
    encode = stage.encode_tensors
    stage.encode_tensors = lambda wav, lengths: calls.append(len(lengths)) or encode(wav, lengths)
    pairs = [(Item(key=str(i), source="s", audio_file=f"{i}.wav", index=i), Audio(c, codec.sample_rate, 0, 1))
             for i, c in enumerate(clips)]
    records = {o.record["key"]: o.record for group in stage.run(iter(pairs)) for o in group}
    return [records[str(i)] for i in range(len(clips))], calls


def tokenize(codec, clips, window=0.0, overlap=0.0, batch_seconds=1000.0):
    records, calls = run_stage(codec, clips, window, overlap, batch_seconds)
    return [record["tokens"] for record in records], calls


def assert_batched_equals_single(codec, seconds: float = 12.0) -> list[dict]:
    """Three clips of one length go in one call (all four, if the codec masks padding) and get their
    single-clip codes; returns the batched records."""
    long = audio(codec.sample_rate, seconds, seed=1)
    third = len(long) // 3
    clips = [long[:third], long[third : 2 * third], long[2 * third : 3 * third], long[: third // 2]]
    batched, calls = run_stage(codec, clips)
    assert max(calls) == (4 if codec.batching == "masked" else 3)  # the three of one length went in one call
    singles = [run_stage(codec, [c])[0][0] for c in clips]
    assert [r["tokens"] for r in batched] == [r["tokens"] for r in singles]
    for name in getattr(codec, "clip_fields", ()):
        assert [r[name] for r in batched] == [r[name] for r in singles]
    return batched


def reference_codes(name: str, folder: str, clip: np.ndarray, option=None) -> list[list[int]]:
    """What the transformers model itself gives for ``clip``, loaded straight from the folder."""
    info = codec_info(name)
    family = FAMILIES[info.config["family"]]
    model = model_class(family).from_pretrained(folder).eval()
    x = torch.from_numpy(clip)[None, None]
    with torch.no_grad():
        if family is FAMILIES["dac"]:
            codes = model.encode(x).audio_codes[0]
        elif family is FAMILIES["mimi"]:
            codes = model.encode(x, num_quantizers=int(option or 8)).audio_codes[0]
        elif family is FAMILIES["higgs"]:
            codes = model.encode(x, bandwidth=float(option or 2.0)).audio_codes[0]
        elif family is FAMILIES["xcodec2"]:
            from transformers.models.xcodec2 import Xcodec2FeatureExtractor

            extractor = Xcodec2FeatureExtractor.from_pretrained(folder)
            inputs = extractor(clip, sampling_rate=16000, return_tensors="pt")
            codes = model.encode(**inputs).audio_codes[0]
        else:
            x = x.expand(-1, model.config.audio_channels, -1)
            chunks = model.encode(x, bandwidth=float(option or 6.0)).audio_codes[:, 0]  # [chunks, K, frames]
            codes = torch.cat(list(chunks), dim=-1)
    return codes.tolist()


@pytest.mark.parametrize("name", CODECS)
def test_codes_equal_the_transformers_model(name, saved):
    folder = saved(name)
    codec = load_codec(name, folder)
    clip = audio(codec.sample_rate, 3.3)
    [tokens], _ = tokenize(codec, [clip])
    expected = reference_codes(name, folder, clip)
    assert tokens == expected
    assert len(tokens) == codec.num_codebooks
    assert len(set(tokens[0])) > 3, "codes do not follow the audio: the test could not fail"


@pytest.mark.parametrize("name, option, books", [("encodec-24khz", "bandwidth", None), ("mimi", "num_quantizers", 3)])
def test_codec_option_selects_the_codebooks(name, option, books, saved):
    folder = saved(name)
    value = 1.5 if name.startswith("encodec") else books
    codec = load_codec(name, folder, options={option: value})
    clip = audio(codec.sample_rate, 2.0)
    [tokens], _ = tokenize(codec, [clip])
    assert tokens == reference_codes(name, folder, clip, value)
    assert len(tokens) == codec.num_codebooks < load_codec(name, folder).num_codebooks


@pytest.mark.parametrize("name", CODECS)
def test_batched_codes_equal_single_clip_codes(name, saved):
    assert_batched_equals_single(load_codec(name, saved(name)))


@pytest.mark.parametrize("name", CODECS)
def test_chunked_long_audio_agrees_with_whole_file_codes(name, saved):
    codec = load_codec(name, saved(name))
    clip = audio(codec.sample_rate, 20.0, seed=2)
    [whole], _ = tokenize(codec, [clip])
    [chunked], calls = tokenize(codec, [clip], window=6.0, overlap=2.0)
    assert sum(calls) > 1
    assert [len(row) for row in chunked] == [len(row) for row in whole]
    same = sum(a == b for row_a, row_b in zip(chunked, whole) for a, b in zip(row_a, row_b))
    assert same / sum(len(row) for row in whole) >= CHUNK_AGREEMENT.get(name, 0.99)


@pytest.mark.parametrize("name", CODECS)
def test_decode_round_trip_keeps_the_length_within_one_frame(name, saved):
    codec = load_codec(name, saved(name))
    clip = audio(codec.sample_rate, 2.5)
    [tokens], _ = tokenize(codec, [clip])
    wav = codec.decode([torch.tensor(tokens)[None]])
    assert wav.ndim == 2 and wav.shape[0] == 1
    frame = max(codec.frame_hops())
    if name == "encodec-48khz":
        frame = codec.alignment  # decodes whole 1 s chunks; resynth trims to the recorded length
    assert abs(wav.shape[-1] - len(clip)) <= frame
    assert torch.isfinite(wav).all()


def test_unknown_option_and_wrong_rate_are_one_line_errors(saved, tmp_path):
    from audiomill.errors import UsageError

    with pytest.raises(UsageError, match="bandwidth=5"):
        load_codec("encodec-24khz", saved("encodec-24khz"), options={"bandwidth": 5.0})
    with pytest.raises(UsageError, match="unknown codec option"):
        load_codec("dac-16khz", saved("dac-16khz"), options={"bandwidth": 6.0})
    with pytest.raises(UsageError, match="24000 Hz"):
        load_codec("dac-16khz", saved("dac-24khz"))
