"""Damaged archives never pass as complete: what they hold intact is kept, the damage is recorded
with its byte position, the run's exit status says it is not complete, and status says why.

One folder holds six damaged copies of the second acceptance shard (b/utt3 .. b/utt6, each an
audio member and a JSON sidecar): one run, one status, and two reruns check every case."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import tarfile

import pytest

from audiomill.corpus import encode_audio, speech, write_tar
from audiomill.errors import EXIT_INCOMPLETE
from audiomill.runner.state import read_json
from tests.conftest import read_jsonl, run_audiomill

KEYS = ["b/utt3", "b/utt4", "b/utt5", "b/utt6"]


def _members(path: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as archive:
        return {member.name: member for member in archive}


def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x5A
    return bytes(damaged)


@pytest.fixture(scope="module")
def damaged(acceptance_shards, tiny_snac, plain_run, tmp_path_factory):
    source = acceptance_shards["paths"][1]
    data = open(source, "rb").read()
    members = _members(source)
    utt4, utt5 = members["b/utt4.mp3"], members["b/utt5.flac"]
    root = tmp_path_factory.mktemp("damaged")
    folder = root / "shards"
    folder.mkdir()
    cases = {
        "cut_member.tar": data[: utt5.offset_data + utt5.size // 2],
        "cut_header.tar": data[: utt5.offset + 100],
        "bad_header.tar": _flip(data, utt4.offset + 10),  # in its name: the checksum fails
        "crc.tar.gz": _flip(gzip.compress(data, mtime=0), -8),  # the CRC-32 in the gzip trailer
        "flip_bz2.tar.bz2": _flip(bz2.compress(data), len(bz2.compress(data)) // 2),
        "flip_xz.tar.xz": _flip(lzma.compress(data), len(lzma.compress(data)) // 2),
    }
    for name, content in cases.items():
        (folder / name).write_bytes(content)
    samples, rate = speech(3.0)
    mp3 = encode_audio(samples, rate, "mp3")  # zeros in the middle: mpg123 prints notes as it resyncs
    write_tar(str(folder / "noisy.tar"), [("gap.mp3", mp3[: len(mp3) // 2] + bytes(4000) + mp3[len(mp3) // 2:])])
    out = root / "out"
    first = run_audiomill("tokenize", str(folder), "--out", str(out), "--model-path", tiny_snac)
    status = run_audiomill("status", str(out), "--check-validity")
    return {"root": root, "folder": folder, "out": out, "first": first, "status": status, "source": source,
            "plain": {r["key"]: r for r in plain_run}, "offsets": {"utt4": utt4.offset, "utt5": utt5}}


def _records(out, shard):
    path = out / f"{shard}.jsonl"
    return read_jsonl(path) if path.exists() else None


def _errors(out, shard):
    path = out / f"{shard}.errors.jsonl"
    return read_jsonl(path) if path.exists() else []


def _same_as_intact(record, plain):
    return {**record, "tar_file": None} == {**plain[record["key"]], "tar_file": None}


def test_a_cut_archive_keeps_every_member_before_the_cut_and_records_the_cut(damaged):
    out, plain, utt5 = damaged["out"], damaged["plain"], damaged["offsets"]["utt5"]
    assert damaged["first"].returncode == EXIT_INCOMPLETE
    records = _records(out, "cut_member")
    assert [r["key"] for r in records] == ["b/utt3", "b/utt4"] and all(_same_as_intact(r, plain) for r in records)
    cut = utt5.offset_data + utt5.size // 2
    (error,) = _errors(out, "cut_member")
    assert error["key"] == "b/utt5" and error["audio_file"] == "b/utt5.flac" and error["position"] == cut
    assert f"cut off at byte {cut}, inside member 'b/utt5.flac'" in error["error"]

    records = _records(out, "cut_header")
    assert [r["key"] for r in records] == ["b/utt3", "b/utt4"] and all(_same_as_intact(r, plain) for r in records)
    (error,) = _errors(out, "cut_header")
    assert error["key"] == f"@{utt5.offset}" and error["position"] == utt5.offset
    assert f"cut off at byte {utt5.offset + 100}, inside a header" in error["error"]


def test_a_corrupt_header_in_the_middle_loses_only_its_member(damaged):
    out, plain, at = damaged["out"], damaged["plain"], damaged["offsets"]["utt4"]
    records = _records(out, "bad_header")
    # b/utt4.mp3's header is lost; its JSON sidecar, found again, holds no audio
    assert [r["key"] for r in records] == ["b/utt3", "b/utt5", "b/utt6"]
    assert all(_same_as_intact(r, plain) for r in records)
    (error,) = _errors(out, "bad_header")
    assert error["key"] == f"@{at}" and error["position"] == at
    assert f"a corrupt header at byte {at}; reading resumed at the next valid header" in error["error"]


@pytest.mark.parametrize("shard, kind", [("crc", "gzip"), ("flip_bz2", "bzip2"), ("flip_xz", "xz")])
def test_a_compressed_archive_failing_its_check_keeps_no_record_it_cannot_vouch_for(damaged, shard, kind):
    out = damaged["out"]
    # one gzip member, one bzip2 or xz stream: nothing in it is verified before the check fails
    assert _records(out, shard) == []
    errors = _errors(out, shard)
    (damage,) = [e for e in errors if e["key"].startswith("@")]
    assert f"{kind} data is damaged" in damage["error"] and damage["position"] > 0
    untrusted = [e for e in errors if not e["key"].startswith("@")]
    assert all(e["key"] in KEYS and e["error"].startswith("not kept: read from a part of the archive that failed")
               for e in untrusted)
    marker = read_json(out / "_audiomill" / "done" / f"{shard}.json")
    assert marker["damaged"] == [damage["error"]] and marker["items"] == 0


def test_status_shows_each_damaged_shard_with_its_reason_and_nothing_is_written_outside_out(damaged):
    status = damaged["status"]
    lines = status.stdout.splitlines()
    for shard in ("cut_member", "cut_header", "bad_header", "crc", "flip_bz2", "flip_xz"):
        (line,) = [line for line in lines if shard in line.split()]
        assert "damaged" in line.split()
    assert "cut off at byte" in status.stdout and "a corrupt header at byte" in status.stdout
    assert status.returncode != 0
    assert sorted(os.listdir(damaged["root"])) == ["out", "shards"]
    assert sorted(os.listdir(damaged["folder"])) == sorted(["cut_member.tar", "cut_header.tar", "bad_header.tar",
                                                             "crc.tar.gz", "flip_bz2.tar.bz2", "flip_xz.tar.xz",
                                                             "noisy.tar"])


def test_what_c_libraries_print_never_reaches_the_terminal(damaged):
    stderr = damaged["first"].stderr
    assert "Note: " not in stderr and "libmpg123" not in stderr and "Xing" not in stderr
    assert "noisy" in [line.split()[0] for line in run_audiomill("status", str(damaged["out"]), "--all").stdout
                       .splitlines() if line.split() and line.split()[1:2] == ["complete"]]


def test_a_rerun_says_damaged_again_without_work_and_a_replaced_archive_is_read_again(damaged, tiny_snac):
    out, folder = damaged["out"], damaged["folder"]
    before = {name: os.path.getmtime(out / name) for name in os.listdir(out) if name.endswith(".jsonl")}
    again = run_audiomill("tokenize", str(folder), "--out", str(out), "--model-path", tiny_snac)
    assert again.returncode == EXIT_INCOMPLETE
    assert "shard cut_member is damaged" in again.stderr
    assert {name: os.path.getmtime(out / name) for name in before} == before

    shutil.copy(damaged["source"], folder / "cut_member.tar")  # the archive, downloaded again
    fixed = run_audiomill("tokenize", str(folder), "--out", str(out), "--model-path", tiny_snac)
    assert fixed.returncode == EXIT_INCOMPLETE  # the other five are still damaged
    assert "cut_member was damaged, and" in fixed.stderr
    records = _records(out, "cut_member")
    assert [r["key"] for r in records] == KEYS and all(_same_as_intact(r, damaged["plain"]) for r in records)
    assert _errors(out, "cut_member") == []
    status = run_audiomill("status", str(out), "--all")
    (line,) = [line for line in status.stdout.splitlines() if "cut_member" in line.split()]
    assert line.split()[1] == "complete"
