"""The journal under every format: shard order, atomic finish, torn lines, retries."""

from __future__ import annotations

import json
import os

import pytest

from audiomill.runner.state import SchemaFile
from audiomill.sinks import get_format
from audiomill.sinks.journal import ShardSink, file_digest

FIELDS = {"key": "string", "tokens": "codes<int16>"}


def sink(tmp_path, fmt: str = "jsonl", shard: str = "000001") -> ShardSink:
    return ShardSink(str(tmp_path), shard, get_format(fmt), FIELDS, SchemaFile(str(tmp_path / "schema.json")))


def lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_records_are_sorted_into_shard_order_and_renamed_atomically(tmp_path):
    out = sink(tmp_path)
    assert out.open() == set()
    for key in ("c", "a", "b"):
        out.write(key, [{"key": key, "tokens": [[1, 2]]}], 1.0)
    out.write_error({"key": "z", "error": "empty file"})
    out.flush()
    assert os.path.exists(tmp_path / "000001.jsonl.partial") and not os.path.exists(tmp_path / "000001.jsonl")
    stats = out.finish(["a", "z", "b", "c"])
    assert stats.pop("output") == file_digest(str(tmp_path / "000001.jsonl"))  # what a rerun checks it against
    assert stats == {"items": 3, "records": 3, "errors": 1, "audio_seconds": 3.0}
    assert [r["key"] for r in lines(tmp_path / "000001.jsonl")] == ["a", "b", "c"]
    assert lines(tmp_path / "000001.errors.jsonl") == [{"key": "z", "error": "empty file"}]
    out.cleanup()
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith("schema")) == [
        "000001.errors.jsonl", "000001.jsonl"]


def test_a_file_may_give_no_record_or_several(tmp_path):
    out = sink(tmp_path)
    out.open()
    out.write("b", [{"key": "b", "segment": i} for i in range(3)], 3.0)
    out.write("a", [], 0.5)
    stats = out.finish(["a", "b"])
    del stats["output"]
    assert stats == {"items": 2, "records": 3, "errors": 0, "audio_seconds": 3.5}
    assert [(r["key"], r["segment"]) for r in lines(tmp_path / "000001.jsonl")] == [("b", 0), ("b", 1), ("b", 2)]


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    partial = tmp_path / "s.jsonl.partial"
    partial.write_bytes(b'{"key":"a","records":[{"key":"a"}],"seconds":1}\n'
                        b'{"key":"b","records":[{"key":"b"}],"seconds":1}\n{"key":"c","rec')
    out = sink(tmp_path, shard="s")
    assert out.open() == {"a", "b"}
    out.write("c", [{"key": "c"}], 1.0)
    out.finish(["a", "b", "c"])
    assert (tmp_path / "s.jsonl").read_bytes() == b'{"key":"a"}\n{"key":"b"}\n{"key":"c"}\n'


def test_no_errors_means_no_errors_file(tmp_path):
    out = sink(tmp_path, shard="s")
    out.open()
    out.finish([])
    out.cleanup()
    assert [n for n in os.listdir(tmp_path) if n.startswith("s.")] == ["s.jsonl"]
    assert (tmp_path / "s.jsonl").read_bytes() == b""


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet"])
def test_retrying_errors_of_a_finished_shard_keeps_its_records(tmp_path, fmt):
    out = sink(tmp_path, fmt, "s")
    out.open()
    out.write("a", [{"key": "a", "tokens": [[1, 2], [3]]}], 2.0)
    out.write_error({"key": "b", "error": "x"})
    stats = out.finish(["a", "b"])
    out.cleanup()
    before = open(out.path, "rb").read()
    again = sink(tmp_path, fmt, "s")
    assert again.open(retry_errors=True, previous=stats) == {"a"}
    assert again.finish(["a", "b"]) == {"items": 1, "records": 1, "errors": 0, "audio_seconds": 2.0,
                                        "output": stats["output"]}
    assert open(out.path, "rb").read() == before
    assert list(get_format(fmt).read(out.path, FIELDS)) == [{"key": "a", "tokens": [[1, 2], [3]]}]


def test_jsonl_gz_is_the_jsonl_bytes_gzipped_deterministically(tmp_path):
    import gzip

    outputs = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        for fmt in ("jsonl", "jsonl.gz"):
            out = sink(tmp_path / name, fmt, "s")
            out.open()
            out.write("a", [{"key": "a", "text": "héllo"}], 1.0)
            out.finish(["a"])
        outputs.append(((tmp_path / name / "s.jsonl").read_bytes(), (tmp_path / name / "s.jsonl.gz").read_bytes()))
    assert outputs[0] == outputs[1]  # same bytes run after run: no name, no time in the gzip header
    assert gzip.decompress(outputs[0][1]) == outputs[0][0]


def test_member_files_go_into_a_tar_in_shard_order_and_a_torn_entry_is_written_again(tmp_path):
    """Members (a segment's audio and JSON) are journaled before their record line: a kill that tears their
    entry leaves the file unwritten; finishing writes them in the shard's order, under WebDataset names,
    with fixed metadata (the same bytes from a torn journal resumed as from one run)."""
    import tarfile

    def member_sink(folder):
        return ShardSink(str(folder), "s", get_format("jsonl"), FIELDS, SchemaFile(str(folder / "schema.json")),
                         members="audio", file_key="source_key")

    def segments(key, n):
        records = [{"key": f"{key}-{i}", "source_key": key} for i in range(n)]
        members = [(r["key"], ext, f"{r['key']}:{ext}".encode() * 100) for r in records for ext in ("flac", "json")]
        return records, members

    clean = tmp_path / "clean"
    clean.mkdir()
    out = member_sink(clean)
    out.open()
    for key, n in (("b.x", 2), ("a", 1), ("c", 0)):
        out.write(key, segments(key, n)[0], 1.0, segments(key, n)[1])
    stats = out.finish(["a", "b.x", "c"])
    out.cleanup()
    with tarfile.open(clean / "audio" / "s.tar") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["a-0.flac", "a-0.json", "b_x-0.flac", "b_x-0.json", "b_x-1.flac", "b_x-1.json"]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {(0, 0, 0, "", "", 0o644)}
    assert stats["members"] == {"file": "audio/s.tar", "count": 6, **file_digest(str(clean / "audio" / "s.tar"))}
    assert stats["file_key"] == "source_key"

    torn = tmp_path / "torn"
    torn.mkdir()
    out = member_sink(torn)
    out.open()
    out.write("b.x", *segments("b.x", 2)[:1], 1.0, segments("b.x", 2)[1])
    out.write("a", *segments("a", 1)[:1], 1.0, segments("a", 1)[1])
    out.close()
    journal = torn / "audio" / "s.tar.partial"
    with open(journal, "rb+") as handle:  # a's member bytes torn off by a kill (its record line written)
        handle.truncate(os.path.getsize(journal) - 50)
    again = member_sink(torn)
    assert again.open() == {"b.x"}  # a's record line is dropped with its members: a is written again
    again.write("a", *segments("a", 1)[:1], 1.0, segments("a", 1)[1])
    again.write("c", [], 1.0, [])
    assert again.finish(["a", "b.x", "c"]) == stats
    assert (torn / "audio" / "s.tar").read_bytes() == (clean / "audio" / "s.tar").read_bytes()
    assert (torn / "s.jsonl").read_bytes() == (clean / "s.jsonl").read_bytes()
