"""maskgct-semantic against its references: transformers' Wav2Vec2BertModel and Amphion's own RepCodec.

The RepCodec checkpoint each test loads is saved by Amphion's class itself (unpacked by
scripts/reference_maskgct.py), decoder and weight-norm tensor names included, so the
loader is tested on the layout amphion/MaskGCT publishes.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

from audiomill.codecs import codec_info, load_codec, resolve_weights
from audiomill.codecs.maskgct import CODEC_WEIGHTS, LAYER, SEMANTIC_MODEL, TINY_CODEC, save_random
from audiomill.errors import UsageError, WeightsNotFound
from tests.codecs.test_transformers_codecs import assert_batched_equals_single, audio, tokenize

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", ".cache", "reference-maskgct")


def reference_repcodec_class():
    if not os.path.isdir(os.path.join(REFERENCE, "amphion_reference")):
        pytest.fail("no reference RepCodec: run 'python scripts/reference_maskgct.py' (make test does)")
    from audiomill.codecs import torchaudio_compat

    torchaudio_compat.install()  # Amphion's vocos module imports torchaudio
    sys.path.insert(0, os.path.abspath(REFERENCE))
    try:
        return importlib.import_module("amphion_reference.codec.kmeans.repcodec_model").RepCodec
    finally:
        sys.path.remove(os.path.abspath(REFERENCE))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return amphion_folder(str(tmp_path_factory.mktemp("maskgct")))


def amphion_folder(folder: str) -> str:
    """A tiny MaskGCT folder whose semantic_codec/model.safetensors Amphion's RepCodec wrote."""
    from safetensors.torch import load_file, save_file

    save_random(folder)
    ours = load_file(os.path.join(folder, CODEC_WEIGHTS))
    torch.manual_seed(3)
    reference = reference_repcodec_class()(hidden_size=ours["encoder.0.embed.weight"].shape[1], **TINY_CODEC).eval()
    with torch.no_grad():  # the codebook that makes codes follow the audio; every other tensor is Amphion's init
        reference.quantizer.quantizers[0].codebook.weight.copy_(ours["quantizer.quantizers.0.codebook.weight"])
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, os.path.join(folder, CODEC_WEIGHTS))
    return folder


def reference_codes(folder: str, clip) -> list[int]:
    """MaskGCT's extract_semantic_code, step by step, with the upstream classes."""
    from safetensors.torch import load_file
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

    processor = SeamlessM4TFeatureExtractor.from_pretrained(os.path.join(folder, SEMANTIC_MODEL))
    model = Wav2Vec2BertModel.from_pretrained(os.path.join(folder, SEMANTIC_MODEL)).eval()
    stats = torch.load(os.path.join(folder, "wav2vec2bert_stats.pt"), weights_only=True)
    state = load_file(os.path.join(folder, CODEC_WEIGHTS))
    codec = reference_repcodec_class()(hidden_size=state["encoder.0.embed.weight"].shape[1], **TINY_CODEC)
    codec.load_state_dict(state)
    codec.eval()
    inputs = processor(clip, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        feat = model(input_features=inputs["input_features"], attention_mask=inputs["attention_mask"],
                     output_hidden_states=True).hidden_states[LAYER]
        feat = (feat - stats["mean"]) / torch.sqrt(stats["var"])
        codes, _ = codec.quantize(feat)
    return codes.reshape(-1).tolist()


def test_codes_equal_the_reference(folder):
    codec = load_codec("maskgct-semantic", folder)
    clip = audio(16000, 3.3)
    [tokens], _ = tokenize(codec, [clip])
    assert tokens == [reference_codes(folder, clip)]
    assert len(tokens[0]) == codec.num_frames(len(clip))[0]
    assert len(set(tokens[0])) > 3, "codes do not follow the audio: the test could not fail"


def test_batched_codes_equal_single_clip_codes(folder):
    assert_batched_equals_single(load_codec("maskgct-semantic", folder), seconds=9.0)


def test_chunked_long_audio_agrees_with_whole_file_codes(folder):
    codec = load_codec("maskgct-semantic", folder)
    clip = audio(16000, 20.0, seed=2)
    [whole], _ = tokenize(codec, [clip])
    [chunked], calls = tokenize(codec, [clip], window=6.0, overlap=2.0)
    assert sum(calls) > 1
    assert len(chunked[0]) == len(whole[0])
    same = sum(a == b for a, b in zip(chunked[0], whole[0])) / len(whole[0])
    # filter banks normalised per window, and 17 random layers of attention over all of it: the
    # windows' codes agree on 0.44 of frames (two clips, 49 distinct codes: chance is ~0.02)
    assert same >= 0.35


def test_layout_errors_say_what_is_missing(folder, tmp_path):
    info = codec_info("maskgct-semantic")
    assert resolve_weights(info, folder) == folder
    with pytest.raises(WeightsNotFound, match="has no w2v-bert-2.0/config.json"):
        resolve_weights(info, str(tmp_path))
    os.makedirs(tmp_path / SEMANTIC_MODEL)
    (tmp_path / SEMANTIC_MODEL / "config.json").write_text("{}")
    with pytest.raises(WeightsNotFound, match="has no semantic_codec/model.safetensors"):
        resolve_weights(info, str(tmp_path))
    os.makedirs(tmp_path / "semantic_codec")
    (tmp_path / CODEC_WEIGHTS).write_bytes(b"")
    with pytest.raises(WeightsNotFound, match="has no wav2vec2bert_stats.pt or wav2vec2bert_stats.safetensors"):
        resolve_weights(info, str(tmp_path))
    with pytest.raises(UsageError, match="no decoder"):
        load_codec("maskgct-semantic", folder).decode([torch.zeros(1, 1, 3, dtype=torch.long)])
    with pytest.raises(UsageError, match="unknown codec option"):
        load_codec("maskgct-semantic", folder, options={"layer": 3.0})
