"""BiCodec through the Codec protocol, against Spark-TTS' own BiCodecTokenizer (spark-tts-lib).

The tiny model is saved in Spark-TTS-0.5B's folder layout (config.yaml, BiCodec/,
wav2vec2-large-xlsr-53/) and loaded by the library's own loader, as users' checkpoints are.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import soundfile
import torch

from audiomill.codecs import codec_info, load_codec, resolve_weights
from audiomill.codecs.bicodec import save_random
from audiomill.errors import UsageError, WeightsNotFound
from tests.codecs.test_transformers_codecs import assert_batched_equals_single, audio, run_stage


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_random(str(tmp_path_factory.mktemp("spark-tts")))


def reference_tokens(folder: str, clip: np.ndarray, tmp_path) -> tuple[list[int], list[int]]:
    """``BiCodecTokenizer.tokenize(path)``, Spark-TTS' entry point, on the clip written as a float WAV."""
    from audiomill.codecs import torchaudio_compat

    torchaudio_compat.install()
    from spark_tts_lib.models.audio_tokenizer import BiCodecTokenizer

    path = tmp_path / "clip.wav"
    soundfile.write(path, clip, 16000, subtype="FLOAT")  # read back as the same values
    with contextlib.redirect_stdout(io.StringIO()):
        tokenizer = BiCodecTokenizer(folder, device=torch.device("cpu"))
    global_tokens, semantic_tokens = tokenizer.tokenize(str(path))
    return semantic_tokens.reshape(-1).tolist(), global_tokens.reshape(-1).tolist()


def records(codec, clips, **windows):
    return run_stage(codec, clips, windows.get("window", 0.0), windows.get("overlap", 0.0))[0]


def test_codes_equal_spark_tts(folder, tmp_path):
    codec = load_codec("bicodec", folder)
    for seconds in (3.3, 7.5):  # a reference clip tiled from a short file, and cut from a longer one
        clip = audio(16000, seconds, seed=int(seconds))
        [record] = records(codec, [clip])
        semantic, speaker = reference_tokens(folder, clip, tmp_path)
        assert record["tokens"] == [semantic]
        assert record["global_tokens"] == speaker
        assert len(speaker) == 32 and len(semantic) == codec.num_frames(len(clip))[0]
        assert len(set(semantic)) > 3 and len(set(speaker)) > 3, "codes do not follow the audio"


def test_batched_codes_equal_single_clip_codes(folder):
    batched = assert_batched_equals_single(load_codec("bicodec", folder))  # global_tokens included
    assert all(len(r["global_tokens"]) == 32 for r in batched)


def test_chunked_long_audio_agrees_with_whole_file_codes(folder):
    codec = load_codec("bicodec", folder)
    clip = audio(16000, 20.0, seed=2)
    [whole] = records(codec, [clip])
    [chunked] = records(codec, [clip], window=8.0, overlap=2.0)
    # Spark-TTS normalises the volume over the clip, and wav2vec2 normalises and attends over it:
    # a window's tokens are close to the whole file's, not equal. Measured on two 20 s clips:
    # global tokens (from the first window's first 6 s) 0.94-0.97, semantic tokens 0.93-0.95.
    speaker = sum(a == b for a, b in zip(chunked["global_tokens"], whole["global_tokens"])) / 32
    assert speaker >= 0.8
    semantic, reference = chunked["tokens"][0], whole["tokens"][0]
    assert len(semantic) == len(reference)
    assert sum(a == b for a, b in zip(semantic, reference)) / len(reference) >= 0.85


def test_decode_round_trip_keeps_the_length_within_one_frame(folder):
    codec = load_codec("bicodec", folder)
    clip = audio(16000, 2.5)
    [record] = records(codec, [clip])
    wav = codec.decode([torch.tensor(record["tokens"]), torch.tensor([record["global_tokens"]])])
    assert wav.shape[0] == 1 and abs(wav.shape[-1] - len(clip)) <= max(codec.frame_hops())
    assert torch.isfinite(wav).all()


def test_layout_and_option_errors(folder, tmp_path):
    info = codec_info("bicodec")
    assert resolve_weights(info, folder) == folder
    with pytest.raises(WeightsNotFound, match="has no config.yaml"):
        resolve_weights(info, str(tmp_path))
    with pytest.raises(UsageError, match="unknown codec option"):
        load_codec("bicodec", folder, options={"bandwidth": 1.0})
