"""Fixtures: real speech made at test time, and tiny real codec models saved as users' checkpoints are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from audiomill.corpus import SENTENCES, encode_audio, speak, speech, write_tar

TINY_SNAC_24KHZ = dict(
    sampling_rate=24000, encoder_dim=8, encoder_rates=[2, 4, 8, 8], decoder_dim=32, decoder_rates=[8, 8, 4, 2],
    attn_window_size=None, codebook_size=64, codebook_dim=4, vq_strides=[4, 2, 1],
)
TINY_SNAC_32KHZ = dict(
    sampling_rate=32000, encoder_dim=8, encoder_rates=[2, 3, 8, 8], decoder_dim=32, decoder_rates=[8, 8, 3, 2],
    attn_window_size=32, codebook_size=64, codebook_dim=4, vq_strides=[8, 4, 2, 1],
)


def pytest_configure(config):
    from audiomill.corpus import SPEECH_DIR_ENV

    if shutil.which("espeak-ng") is None and not os.path.isdir(os.environ.get(SPEECH_DIR_ENV, "")):
        raise pytest.UsageError("the tests need espeak-ng for real speech: apt-get install espeak-ng "
                                f"(or its saved output in ${SPEECH_DIR_ENV}: see benchmarks/gpu_prepare.sh)")


def save_snac(folder, config: dict, seed: int = 2) -> str:
    """A randomly initialised SNAC saved in the upstream layout: config.json + pytorch_model.bin.

    See :func:`audiomill.codecs.snac.random_model` for why its biases are treated.
    """
    from audiomill.codecs.snac import save_random

    return save_random(str(folder), config, seed)


@pytest.fixture(scope="session")
def tiny_snac(tmp_path_factory) -> str:
    return save_snac(tmp_path_factory.mktemp("snac24"), TINY_SNAC_24KHZ)


@pytest.fixture(scope="session")
def tiny_snac_32k(tmp_path_factory) -> str:
    return save_snac(tmp_path_factory.mktemp("snac32"), TINY_SNAC_32KHZ)


GOOD_FILES = {  # key: (sentence index, format)
    "a/utt0": (0, "mp3"),
    "a/utt1": (1, "flac"),
    "a/utt2": (2, "wav"),
    "b/utt3": (3, "ogg"),
    "b/utt4": (4, "mp3"),
    "b/utt5": (5, "flac"),
    "b/utt6": (6, "wav"),
}


def sentence_audio(index: int, extension: str) -> bytes:
    from audiomill.corpus import SENTENCES

    samples, rate = speak(SENTENCES[index % len(SENTENCES)])
    return encode_audio(samples, rate, extension)


@pytest.fixture(scope="session")
def acceptance_shards(tmp_path_factory) -> dict:
    """Two tar shards as the backbone's acceptance describes them.

    Real speech as MP3 44.1 kHz stereo, FLAC 48 kHz, WAV 16 kHz (and OGG) with JSON
    sidecars; a zero-byte member, a truncated MP3, a text file named .mp3, a member
    named ../evil.mp3, and one file of three minutes.
    """
    folder = tmp_path_factory.mktemp("shards")
    first: list[tuple[str, bytes]] = []
    for key in ("a/utt0", "a/utt1", "a/utt2"):
        index, ext = GOOD_FILES[key]
        first.append((f"{key}.{ext}", sentence_audio(index, ext)))
        first.append((f"{key}.json", json.dumps({"text": f"sentence {index}", "lang": "en"}).encode()))
    first.append(("bad/empty.mp3", b""))
    full = sentence_audio(7, "mp3")
    first.append(("bad/truncated.mp3", full[: len(full) // 2]))
    first.append(("bad/notaudio.mp3", b"This is a plain text file, not an MP3.\n" * 20))
    first.append(("../evil.mp3", sentence_audio(8, "mp3")))
    samples, rate = speech(180.0)
    first.append(("long/talk.mp3", encode_audio(samples, rate, "mp3")))
    first.append(("long/talk.json", json.dumps({"text": "three minutes"}).encode()))
    second: list[tuple[str, bytes]] = []
    for key in ("b/utt3", "b/utt4", "b/utt5", "b/utt6"):
        index, ext = GOOD_FILES[key]
        second.append((f"{key}.{ext}", sentence_audio(index, ext)))
        second.append((f"{key}.json", json.dumps({"text": f"sentence {index}"}).encode()))
    paths = [str(folder / "000001.tar"), str(folder / "000002.tar")]
    write_tar(paths[0], first)
    write_tar(paths[1], second)
    return {
        "paths": paths,
        "folder": str(folder),
        "good": sorted([*GOOD_FILES, "long/talk", "bad/truncated"]),
        "bad": ["bad/empty", "bad/notaudio", "../evil"],
    }


@pytest.fixture(scope="session")
def plain_run(acceptance_shards, tiny_snac, tmp_path_factory) -> list[dict]:
    """The records of the second acceptance shard (b/utt3 .. b/utt6), tokenized by tiny_snac."""
    out = tmp_path_factory.mktemp("plain") / "out"
    run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", str(out), "--model-path", tiny_snac, check=True)
    return read_jsonl(out / "000002.jsonl")


def run_audiomill(*args: str, check: bool = False, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The real command line, in a fresh process, as users run it."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "audiomill", *args], capture_output=True, text=True,
                            env=full_env, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"audiomill {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def first_record_written(out) -> str | None:
    """The name of a partial shard with at least one whole record in it, once there is one."""
    if not os.path.isdir(out):
        return None
    for name in os.listdir(out):
        if name.endswith(".jsonl.partial"):
            try:
                with open(os.path.join(out, name), "rb") as handle:
                    if b"\n" in handle.read():
                        return name
            except FileNotFoundError:  # the shard was finished between listdir and open
                continue
    return None


def snac_reference_codes(model_dir: str, samples: np.ndarray) -> list[list[int]]:
    """Codes from calling the upstream package directly: SNAC.from_pretrained + SNAC.encode."""
    import torch
    from snac import SNAC

    model = SNAC.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        codes = model.encode(torch.from_numpy(samples)[None, None, :])
    return [level[0].tolist() for level in codes]


# -- prepare-tts: a tiny IndexTTS2 release and utterances with text (tests/test_tts.py, the SLURM test) --


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> str:
    from audiomill.codecs.maskgct import save_random
    from audiomill.conditioning import save_tiny

    folder = str(tmp_path_factory.mktemp("IndexTTS-2"))
    save_random(folder)
    return save_tiny(folder, features=16)


@pytest.fixture(scope="session")
def utterances(tmp_path_factory) -> dict:
    """Seven good utterances (two of them the same audio under two ids: one exact-length batch), one with
    text that cleans to nothing, one whose file is missing, one line that is not JSON; a tokenizer."""
    folder = tmp_path_factory.mktemp("utterances")
    rows = []
    for number in range(6):
        samples, rate = speak(SENTENCES[number])
        path = folder / f"s{number}.{('flac', 'mp3', 'wav')[number % 3]}"
        path.write_bytes(encode_audio(samples[: int(rate * (1.0 + 0.4 * number))], rate, path.suffix[1:]))
        rows.append({"audio_filepath": str(path), "id": f"utt_{number:06d}", "text": SENTENCES[number],
                     "speaker": f"spk{number % 2}", "language": "en"})
    rows.append({**rows[0], "id": "utt_000006", "text": "spk 1: Twice, the 2nd time."})
    rows.append({**rows[1], "id": "utt_000007", "text": "speaker 4:  "})
    rows.append({"audio_filepath": str(folder / "gone.wav"), "id": "utt_000008", "text": "missing"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{not json\n")
    model = str(folder / "bpe.model")
    from audiomill.text import train_tokenizer

    train_tokenizer([r["text"] for r in rows] * 4, model, vocab_size=90, language="en")
    return {"manifest": str(manifest), "tokenizer": model, "rows": {r["id"]: r for r in rows}}
