"""audiomill prepare-tts: IndexTTS2's layout from a tiny release folder (a tiny w2v-BERT, RepCodec and
statistics in MaskGCT's layout; tiny conditioning paths in gpt.pth), compared with the maskgct-semantic
codec's own codes and with the conditioning paths run on each clip alone; the split, bad input, kills."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from audiomill.corpus import SENTENCES, encode_audio, speak
from audiomill.text import is_validation, normalise
from tests.conftest import read_jsonl, run_audiomill
from tests.sinks.conftest import kill_when, output_tree

KEYS = ["id", "audio_path", "text", "speaker", "language", "duration", "text_ids_path", "text_len", "codes_path",
        "code_len", "condition_path", "condition_len", "emo_vec_path"]


def prepare(utterances, release, out, *flags: str) -> list[str]:
    return ["prepare-tts", utterances["manifest"], "--tokenizer", utterances["tokenizer"], "--language", "en",
            "--model-path", release, "--val-ratio", "0.5", "--out", str(out), *flags]


@pytest.fixture(scope="module")
def prepared(utterances, release, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "out"
    result = run_audiomill(*prepare(utterances, release, out))
    assert result.returncode == 3, result.stderr  # complete, with the bad rows as error records
    return out


def test_the_layout_and_manifests_are_indextts2s(prepared, utterances):
    out = prepared
    assert sorted(os.listdir(out)) == ["README.md", "_audiomill", "codes", "condition", "emo_vec", "stats.json",
                                       "text", "text_ids", "train_manifest.jsonl", "tts", "val_manifest.jsonl"]
    train, val = read_jsonl(out / "train_manifest.jsonl"), read_jsonl(out / "val_manifest.jsonl")
    entries = train + val
    assert sorted(e["id"] for e in entries) == [f"utt_{n:06d}" for n in range(7)]
    assert train and val  # the hash rule at 0.5 puts some ids on each side, always the same ones
    for entry in train:
        assert list(entry) == KEYS and not is_validation(entry["id"], 0.5)
    for entry in val:
        assert list(entry) == KEYS and is_validation(entry["id"], 0.5)
    for entry in entries:
        row = utterances["rows"][entry["id"]]
        assert entry["text"] == normalise(row["text"], "en") and entry["speaker"] == row["speaker"]
        assert entry["audio_path"] == row["audio_filepath"] and entry["language"] == "en"
        for name, length in (("text_ids", "text_len"), ("codes", "code_len"), ("condition", "condition_len"),
                             ("emo_vec", None)):
            path = entry[f"{name}_path"]
            assert path == f"{name}/{entry['id']}.npy"  # relative to --out
            array = np.load(out / path)
            if length:
                assert len(array) == entry[length]
        assert np.load(out / entry["text_ids_path"]).dtype == np.int32
        assert np.load(out / entry["codes_path"]).dtype == np.int32
        assert np.load(out / entry["condition_path"]).shape == (32, 32)
        assert np.load(out / entry["emo_vec_path"]).shape == (32,)
    assert next(e for e in entries if e["id"] == "utt_000006")["text"] == "Twice, the second time."
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["total"], stats["train"], stats["val"]) == (7, len(train), len(val))
    assert stats["tokenizer"] == utterances["tokenizer"] and stats["gpt_checkpoint"].endswith("gpt.pth")
    assert len(stats["tokenizer_sha256"]) == 64 and len(stats["gpt_checkpoint_sha256"]) == 64
    errors = read_jsonl(out / "text" / "manifest-00000.errors.jsonl")
    assert sorted(e["key"] for e in errors) == ["line10", "utt_000007", "utt_000008"]
    # push uploads the whole folder but its state: the layout at the top too
    listed = run_audiomill("push", str(out), "--repo", "me/tts", "--dry-run", check=True).stdout.splitlines()
    assert sorted(listed) == sorted(output_tree(out)) and "codes/utt_000000.npy" in listed


def test_codes_equal_the_codecs_and_vectors_equal_each_clip_alone(prepared, utterances, release, tmp_path):
    import torch

    from audiomill.audio import decode
    from audiomill.stages.tts import TtsSettings, TtsStage

    out = prepared
    tokens = tmp_path / "tokens"
    result = run_audiomill("tokenize", utterances["manifest"], "--codec", "maskgct-semantic", "--model-path", release,
                           "--out", str(tokens))
    assert result.returncode == 3, result.stderr
    reference = {r["key"]: r["tokens"][0] for r in read_jsonl(tokens / "manifest-00000.jsonl")}
    stage = TtsStage.build(TtsStage.check({"model_path": release}), "cpu")
    assert isinstance(TtsSettings.from_dict({"model_path": release}), TtsSettings)
    for number in range(7):
        key = f"utt_{number:06d}"
        codes = np.load(out / "codes" / f"{key}.npy")
        assert codes.tolist() == reference[key] and len(set(codes.tolist())) > 1  # codes that vary
        samples = decode(utterances["rows"][key]["audio_filepath"], 16000).samples
        with torch.inference_mode():
            alone_codes, condition, emotion = stage.encode_arrays([samples])[0]
        assert alone_codes.tolist() == codes.tolist()
        np.testing.assert_allclose(np.load(out / "condition" / f"{key}.npy"), condition, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.load(out / "emo_vec" / f"{key}.npy"), emotion, atol=1e-5, rtol=0)
    # utt_000000 and utt_000006 are one audio: the same codes and vectors, to the bit (one clip a model call)
    assert np.array_equal(np.load(out / "condition" / "utt_000000.npy"), np.load(out / "condition" / "utt_000006.npy"))
    assert np.array_equal(np.load(out / "codes" / "utt_000000.npy"), np.load(out / "codes" / "utt_000006.npy"))


def test_killed_runs_resume_to_the_same_layout(prepared, utterances, release, tmp_path):
    out = tmp_path / "out"

    def journaled() -> bool:
        partial = out / "tts" / "manifest-00000.jsonl.partial"
        return partial.exists() and partial.read_text().count("\n") >= 2

    kill_when(prepare(utterances, release, out), journaled)
    assert not (out / "train_manifest.jsonl").exists()
    assert run_audiomill(*prepare(utterances, release, out)).returncode == 3
    assert output_tree(out) == output_tree(prepared)
    shutil.rmtree(out / "codes")  # the layout is rebuilt from the records by a rerun
    assert run_audiomill(*prepare(utterances, release, out)).returncode == 3
    assert output_tree(out) == output_tree(prepared)


def test_a_release_folder_without_gpt_pth_is_one_line(utterances, release, tmp_path):
    broken = tmp_path / "release"
    shutil.copytree(release, broken)
    os.remove(broken / "gpt.pth")
    result = run_audiomill(*prepare(utterances, str(broken), tmp_path / "out"))
    assert result.returncode == 1 and "has no gpt.pth" in result.stderr and "Traceback" not in result.stderr


def test_the_bad_input_zoo_becomes_error_records(utterances, release, tmp_path):
    """A tar shard with an empty file, a text file named .mp3, a truncated MP3, an unsafe member name and a
    file without text, each beside good ones: the good ones are in the manifests, the others error records
    of the stage that could not use them."""
    from audiomill.corpus import write_tar

    def sample(key: str, audio: bytes, text: str | None = "A short sentence.") -> list[tuple[str, bytes]]:
        sidecar = [(f"{key}.json", json.dumps({"text": text}).encode())] if text is not None else []
        return [(f"{key}.mp3", audio), *sidecar]

    samples, rate = speak(SENTENCES[1])
    good = encode_audio(samples[: rate * 2], rate, "mp3")
    members = (sample("ok/a", good) + sample("bad/empty", b"") + sample("bad/notaudio", b"plain text\n" * 40)
               + sample("bad/truncated", good[: len(good) // 3]) + sample("../evil", good)
               + sample("bad/notext", good, None) + sample("ok/b", good, "Another one, the 3rd."))
    shard = str(tmp_path / "zoo.tar")
    write_tar(shard, members)
    out = tmp_path / "out"
    result = run_audiomill("prepare-tts", shard, "--tokenizer", utterances["tokenizer"], "--language", "en",
                           "--model-path", release, "--val-ratio", "0.2", "--out", str(out))
    assert result.returncode == 3, result.stderr
    entries = read_jsonl(out / "train_manifest.jsonl") + read_jsonl(out / "val_manifest.jsonl")
    errors = {e["key"] for name in ("text", "tts") for path in sorted((out / name).glob("*.errors.jsonl"))
              for e in read_jsonl(path)}
    kept = sorted(e["id"] for e in entries)
    assert {"ok/a", "ok/b"} <= set(kept) and {"bad/empty", "bad/notaudio", "bad/notext"} <= errors
    assert not set(kept) & errors and "../evil" not in kept
    assert set(kept) | errors >= {"ok/a", "ok/b", "bad/empty", "bad/notaudio", "bad/truncated", "bad/notext"}
    assert json.loads((out / "stats.json").read_text())["total"] == len(kept)
    assert (out / "codes" / "ok" / "a.npy").is_file()
