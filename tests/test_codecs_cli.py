"""`audiomill tokenize --codec NAME` end to end for every codec, from the checkpoint layout users have."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile

from audiomill.audio import decode
from audiomill.codecs import codec_info, load_codec
from audiomill.codecs.hf import save_random
from tests.codecs.test_transformers_codecs import CODECS, reference_codes
from tests.conftest import GOOD_FILES, first_record_written, read_jsonl, run_audiomill, sentence_audio

WINDOWS = ["--chunk-seconds", "10", "--overlap-seconds", "2", "--batch-seconds", "12"]


def jsonl_outputs(out) -> dict[str, bytes]:
    return {name: open(os.path.join(out, name), "rb").read() for name in sorted(os.listdir(out))
            if name.endswith(".jsonl")}


@pytest.mark.parametrize("name", CODECS)
def test_tokenize_with_every_codec(name, acceptance_shards, tmp_path):
    folder = save_random(codec_info(name), str(tmp_path / "model"))
    out = tmp_path / "out"
    shard = acceptance_shards["paths"][1]  # four short files: the long one is covered by the chunking tests
    result = run_audiomill("tokenize", shard, "--out", str(out), "--codec", name, "--model-path", folder, *WINDOWS)
    assert result.returncode == 0, result.stderr
    records = {r["key"]: r for r in read_jsonl(out / "000002.jsonl")}
    assert sorted(records) == ["b/utt3", "b/utt4", "b/utt5", "b/utt6"]
    info = codec_info(name)
    books = load_codec(name, folder).num_codebooks  # the tiny configs have smaller codebooks: more of them
    for record in records.values():
        assert record["codec"] == name and record["sample_rate"] == info.sample_rate
        assert len(record["tokens"]) == books
    # a short file's codes are the transformers model's own on the same decoded audio
    index, ext = GOOD_FILES["b/utt6"]
    samples = decode(sentence_audio(index, ext), info.sample_rate).samples
    assert records["b/utt6"]["tokens"] == reference_codes(name, folder, samples)


def test_a_killed_mimi_run_resumes_to_identical_output(acceptance_shards, tmp_path):
    folder = save_random(codec_info("mimi"), str(tmp_path / "model"))
    common = [acceptance_shards["paths"][0], "--codec", "mimi", "--model-path", folder, *WINDOWS]
    reference = tmp_path / "reference"
    assert run_audiomill("tokenize", *common, "--out", str(reference)).returncode == 3
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "audiomill", "tokenize", *common, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if first_record_written(out):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert run_audiomill("tokenize", *common, "--out", str(out)).returncode == 3
    assert jsonl_outputs(out) == jsonl_outputs(reference)
    # and back to audio: one WAV per record, of the record's length, named by key
    wavs = tmp_path / "wavs"
    run_audiomill("resynth", str(out), "--wav-dir", str(wavs), check=True)
    records = read_jsonl(out / "000001.jsonl")
    for record in records:
        samples, rate = soundfile.read(wavs / (record["key"] + ".wav"))
        assert rate == 24000 and len(samples) == record["num_samples"]
    assert not (tmp_path / "evil.wav").exists()


def test_codec_option_is_recorded_and_must_match_on_resume(acceptance_shards, tmp_path):
    folder = save_random(codec_info("encodec-24khz"), str(tmp_path / "model"))
    out = tmp_path / "out"
    common = [acceptance_shards["paths"][1], "--out", str(out), "--codec", "encodec-24khz", "--model-path", folder]
    result = run_audiomill("tokenize", *common, "--codec-option", "bandwidth=1.5")
    assert result.returncode == 0, result.stderr
    books = {len(r["tokens"]) for r in read_jsonl(out / "000002.jsonl")}
    assert books == {3}  # 1.5 kbps of 6-bit codebooks at 75 Hz
    clash = run_audiomill("tokenize", *common, "--codec-option", "bandwidth=3")
    assert clash.returncode != 0 and "made with --codec-option bandwidth=1.5" in clash.stderr
    bad = run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", str(tmp_path / "x"), "--codec",
                        "dac-16khz", "--random-weights", "--codec-option", "bandwidth=3")
    assert bad.returncode != 0 and "dac-16khz has no option bandwidth" in bad.stderr


def test_tokenize_with_hubert_units(acceptance_shards, tmp_path):
    from audiomill.codecs.units import save_random as save_hubert
    from tests.codecs.test_hubert_units import reference_units

    folder = save_hubert(str(tmp_path / "hubert"), clusters=50)
    out = tmp_path / "out"
    result = run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", str(out), "--codec", "hubert-units",
                           "--codec-option", "layer=2", "--model-path", folder, *WINDOWS)
    assert result.returncode == 0, result.stderr
    records = {r["key"]: r for r in read_jsonl(out / "000002.jsonl")}
    index, ext = GOOD_FILES["b/utt5"]
    samples = decode(sentence_audio(index, ext), 16000).samples
    assert records["b/utt5"]["tokens"] == [reference_units(folder, samples, 2)]


def test_tokenize_with_maskgct_semantic(acceptance_shards, tmp_path):
    from tests.codecs.test_maskgct_semantic import amphion_folder, reference_codes

    folder = amphion_folder(str(tmp_path / "maskgct"))  # as a MaskGCT user assembles it
    out = tmp_path / "out"
    result = run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", str(out), "--codec",
                           "maskgct-semantic", "--model-path", folder, *WINDOWS)
    assert result.returncode == 0, result.stderr
    records = {r["key"]: r for r in read_jsonl(out / "000002.jsonl")}
    assert sorted(records) == ["b/utt3", "b/utt4", "b/utt5", "b/utt6"]
    index, ext = GOOD_FILES["b/utt5"]
    samples = decode(sentence_audio(index, ext), 16000).samples
    assert records["b/utt5"]["tokens"] == [reference_codes(folder, samples)]
    resynth = run_audiomill("resynth", str(out), "--wav-dir", str(tmp_path / "wavs"))
    assert resynth.returncode != 0 and "no decoder" in resynth.stderr and "Traceback" not in resynth.stderr


def test_tokenize_with_bicodec_and_resynthesise(acceptance_shards, tmp_path):
    from audiomill.codecs.bicodec import save_random as save_spark
    from tests.codecs.test_bicodec import reference_tokens

    folder = save_spark(str(tmp_path / "Spark-TTS-0.5B"))
    out = tmp_path / "out"
    result = run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", str(out), "--codec", "bicodec",
                           "--model-path", folder, *WINDOWS)
    assert result.returncode == 0, result.stderr
    records = {r["key"]: r for r in read_jsonl(out / "000002.jsonl")}
    assert sorted(records) == ["b/utt3", "b/utt4", "b/utt5", "b/utt6"]
    index, ext = GOOD_FILES["b/utt4"]
    samples = decode(sentence_audio(index, ext), 16000).samples
    semantic, speaker = reference_tokens(folder, samples, tmp_path)
    assert records["b/utt4"]["tokens"] == [semantic] and records["b/utt4"]["global_tokens"] == speaker
    wavs = tmp_path / "wavs"
    run_audiomill("resynth", str(out), "--wav-dir", str(wavs), check=True)
    for record in records.values():
        audio, rate = soundfile.read(wavs / (record["key"] + ".wav"))
        assert rate == 16000 and len(audio) == record["num_samples"]
