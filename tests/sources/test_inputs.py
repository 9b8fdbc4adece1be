"""Inputs a user expects to work: compressed archives of every kind, a single file, and a clear no."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil

import pytest

from tests.conftest import read_jsonl, run_audiomill, sentence_audio


@pytest.mark.parametrize("suffix, compress", [(".tar.gz", gzip.compress), (".tar.bz2", bz2.compress),
                                              (".tar.xz", lzma.compress)])
def test_compressed_archives_give_the_records_of_the_plain_one(suffix, compress, acceptance_shards, tiny_snac,
                                                                plain_run, tmp_path):
    archive = tmp_path / f"000002{suffix}"
    archive.write_bytes(compress(open(acceptance_shards["paths"][1], "rb").read()))
    out = tmp_path / "out"
    run_audiomill("tokenize", str(archive), "--out", str(out), "--model-path", tiny_snac, check=True)
    records = read_jsonl(out / "000002.jsonl")
    assert [r["tar_file"] for r in records] == [str(archive)] * 4
    assert [{**r, "tar_file": None} for r in records] == [{**r, "tar_file": None} for r in plain_run]


def test_a_single_audio_file_is_an_input(tiny_snac, plain_run, tmp_path):
    audio = tmp_path / "utt6.wav"
    audio.write_bytes(sentence_audio(6, "wav"))  # b/utt6 of the acceptance shards
    (tmp_path / "utt6.json").write_text('{"text": "six"}')
    out = tmp_path / "out"
    run_audiomill("tokenize", str(audio), "--out", str(out), "--model-path", tiny_snac, check=True)
    (record,) = read_jsonl(out / "utt6.jsonl")
    assert record["key"] == "utt6" and record["audio_file"] == "utt6.wav" and record["text"] == "six"
    assert record["tokens"] == next(r["tokens"] for r in plain_run if r["key"] == "b/utt6")


def test_a_folder_of_archives_and_audio_files_is_refused_in_one_line(acceptance_shards, tiny_snac, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(acceptance_shards["paths"][1], folder)
    (folder / "extra").mkdir()
    (folder / "extra" / "loose.flac").write_bytes(sentence_audio(1, "flac"))
    out = tmp_path / "out"
    result = run_audiomill("tokenize", str(folder), "--out", str(out), "--model-path", tiny_snac)
    assert result.returncode == 1 and not out.exists()
    assert result.stderr.strip().splitlines() == [
        f"audiomill tokenize: error: {folder} holds both tar archives and audio files (such as extra/loose.flac): "
        f"pass the archives ({folder}/*.tar) or the audio files' folder, not both at once"]


def test_every_extension_ffmpeg_reads_is_found_and_decoded(tiny_snac, tmp_path):
    from audiomill.corpus import FFMPEG_FORMATS, SENTENCES, encode_audio, speak

    folder = tmp_path / "corpus"
    folder.mkdir()
    samples, rate = speak(SENTENCES[2])
    for extension in FFMPEG_FORMATS:
        (folder / f"utt-{extension}.{extension}").write_bytes(encode_audio(samples, rate, extension))
    out = tmp_path / "out"
    result = run_audiomill("tokenize", str(folder), "--out", str(out), "--model-path", tiny_snac)
    assert result.returncode == 0, result.stderr
    records = {r["key"]: r for r in read_jsonl(out / "corpus-00000.jsonl")}
    assert sorted(records) == sorted(f"utt-{e}" for e in FFMPEG_FORMATS)
    expected = len(samples) * 24000 / rate
    for key, record in records.items():  # the whole sentence, give or take an encoder's padding
        assert abs(record["num_samples"] - expected) < 0.1 * 24000, (key, record["num_samples"], expected)

    # --extensions chooses: in the folder's listing, and in a rerun that would change it (refused)
    chosen = tmp_path / "chosen"
    result = run_audiomill("tokenize", str(folder), "--out", str(chosen), "--model-path", tiny_snac,
                           "--extensions", ".M4A,opus")
    assert result.returncode == 0, result.stderr
    assert [r["key"] for r in read_jsonl(chosen / "corpus-00000.jsonl")] == ["utt-m4a", "utt-opus"]
    assert [r["tokens"] for r in read_jsonl(chosen / "corpus-00000.jsonl")] == \
        [records["utt-m4a"]["tokens"], records["utt-opus"]["tokens"]]
    again = run_audiomill("tokenize", str(folder), "--out", str(chosen), "--model-path", tiny_snac)
    assert again.returncode == 1 and again.stderr.strip().splitlines() == [
        f"audiomill tokenize: error: {chosen} was made with --extensions m4a,opus, not the default --extensions: "
        f"use another --out, or the same --extensions"]


def test_extensions_choose_the_audio_members_of_an_archive(tmp_path):
    from audiomill.corpus import write_tar
    from audiomill.items import Shard
    from audiomill.sources import read_shard
    from audiomill.sources.discover import discover_shards

    path = tmp_path / "000003.tar"
    write_tar(str(path), [("a.mp3", b"A"), ("a.json", b'{"t": 1}'), ("b.flac", b"B"), ("c.opus", b"C")])
    (shard,) = discover_shards([str(path)], extensions=["FLAC", "opus"])
    assert shard == Shard("000003", "tar", str(path), extensions=("flac", "opus"))
    assert [(i.key, i.data) for i in read_shard(shard)] == [("b", b"B"), ("c", b"C")]
    assert Shard.from_json(shard.to_json()) == shard  # as the plan keeps it
