"""Names that are not UTF-8, and one shard failing without stopping the others."""

from __future__ import annotations

import io
import json
import os
import tarfile

import soundfile

from audiomill.sinks import get_format
from tests.conftest import read_jsonl, run_audiomill, sentence_audio

BAD_MEMBER = os.fsdecode(b"a/bad\xff")  # the byte 0xff reaches Python as U+DCFF (surrogateescape)
BAD_FILE = os.fsdecode(b"bad\xfe")


def odd_inputs(folder) -> list[str]:
    archive = folder / "000001.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in ((b"a/ok.wav", sentence_audio(0, "wav")), (b"a/bad\xff.wav", sentence_audio(1, "wav"))):
            info = tarfile.TarInfo(os.fsdecode(name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    audio = folder / "files"
    audio.mkdir()
    (audio / "good.flac").write_bytes(sentence_audio(2, "flac"))
    with open(os.path.join(os.fsencode(audio), b"bad\xfe.wav"), "wb") as handle:
        handle.write(b"not audio yet\n" * 30)
    return [str(archive), str(audio)]


def test_names_that_are_not_utf8_are_written_reversibly_read_back_and_retried(tiny_snac, tmp_path):
    inputs = odd_inputs(tmp_path)
    out = tmp_path / "out"
    first = run_audiomill("tokenize", *inputs, "--out", str(out), "--model-path", tiny_snac)
    assert first.returncode == 3, first.stderr  # complete; the folder's bad file is not audio yet
    records = read_jsonl(out / "000001.jsonl")
    assert [r["key"] for r in records] == ["a/ok", BAD_MEMBER]
    assert os.fsencode(records[1]["audio_file"]) == b"a/bad\xff.wav"
    (error,) = read_jsonl(out / "files-00000.errors.jsonl")
    assert error["key"] == BAD_FILE
    # the file is mended; --retry-errors finds its key again
    with open(os.path.join(os.fsencode(inputs[1]), b"bad\xfe.wav"), "wb") as handle:
        handle.write(sentence_audio(3, "wav"))
    again = run_audiomill("tokenize", *inputs, "--out", str(out), "--model-path", tiny_snac, "--retry-errors")
    assert again.returncode == 0, again.stderr
    assert [r["key"] for r in read_jsonl(out / "files-00000.jsonl")] == [BAD_FILE, "good"]
    # resynth writes the file under its own bytes
    wavs = tmp_path / "wavs"
    run_audiomill("resynth", str(out / "000001.jsonl"), "--wav-dir", str(wavs), check=True)
    assert sorted(os.listdir(os.path.join(os.fsencode(wavs), b"a"))) == [b"bad\xff.wav", b"ok.wav"]
    assert soundfile.info(os.path.join(os.fsencode(wavs), b"a", b"bad\xff.wav")).samplerate == 24000
    # Parquet: readable in its column, exact through the format's reader and in meta_json
    parquet = tmp_path / "parquet"
    run_audiomill("tokenize", inputs[0], "--out", str(parquet), "--model-path", tiny_snac, "--format", "parquet",
                  check=True)
    read = list(get_format("parquet").read(str(parquet / "000001.parquet"), {}))
    assert [r["key"] for r in read] == ["a/ok", BAD_MEMBER]
    import pyarrow.parquet as pq

    row = pq.read_table(parquet / "000001.parquet").to_pylist()[1]
    assert row["key"] == "a/bad\\xff" and json.loads(row["meta_json"])["key"] == BAD_MEMBER


def test_a_shard_that_cannot_be_written_fails_alone_with_its_traceback(acceptance_shards, tiny_snac, tmp_path):
    out = tmp_path / "out"
    (out / "000001.jsonl.partial").mkdir(parents=True)  # its journal cannot be opened
    result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac)
    assert result.returncode == 4, result.stderr  # not complete
    assert "shard 000001 failed: IsADirectoryError" in result.stderr
    assert len(read_jsonl(out / "000002.jsonl")) == 4  # the other shard went on
    failure = json.load(open(out / "_audiomill" / "failed" / "000001.json"))
    assert failure["reason"].startswith("IsADirectoryError")
    assert "Traceback (most recent call last)" in failure["reason"]
    status = run_audiomill("status", str(out)).stdout
    assert "000001" in status and "failed" in status
    os.rmdir(out / "000001.jsonl.partial")
    assert run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path",
                         tiny_snac).returncode == 3
