from __future__ import annotations

import json
import os

from audiomill.sinks.jsonl import JsonlSink


def lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_records_are_sorted_into_shard_order_and_renamed_atomically(tmp_path):
    sink = JsonlSink(str(tmp_path), "000001")
    assert sink.open() == set()
    for key in ("c", "a", "b"):
        sink.write({"key": key, "num_samples": 16000, "sample_rate": 16000})
    sink.write_error({"key": "z", "error": "empty file"})
    sink.flush()
    assert os.path.exists(tmp_path / "000001.jsonl.partial") and not os.path.exists(tmp_path / "000001.jsonl")
    stats = sink.finish(["a", "z", "b", "c"])
    assert stats == {"items": 3, "errors": 1, "audio_seconds": 3.0}
    assert [r["key"] for r in lines(tmp_path / "000001.jsonl")] == ["a", "b", "c"]
    assert lines(tmp_path / "000001.errors.jsonl") == [{"key": "z", "error": "empty file"}]
    assert sorted(os.listdir(tmp_path)) == ["000001.errors.jsonl", "000001.jsonl"]


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    partial = tmp_path / "s.jsonl.partial"
    partial.write_bytes(b'{"key":"a"}\n{"key":"b"}\n{"key":"c","tok')
    sink = JsonlSink(str(tmp_path), "s")
    assert sink.open() == {"a", "b"}
    sink.write({"key": "c"})
    sink.finish(["a", "b", "c"])
    assert (tmp_path / "s.jsonl").read_bytes() == b'{"key":"a"}\n{"key":"b"}\n{"key":"c"}\n'


def test_no_errors_means_no_errors_file(tmp_path):
    sink = JsonlSink(str(tmp_path), "s")
    sink.open()
    sink.finish([])
    assert os.listdir(tmp_path) == ["s.jsonl"] and (tmp_path / "s.jsonl").read_bytes() == b""


def test_retrying_errors_forgets_them_but_keeps_records(tmp_path):
    sink = JsonlSink(str(tmp_path), "s")
    sink.open()
    sink.write({"key": "a"})
    sink.write_error({"key": "b", "error": "x"})
    sink.finish(["a", "b"])
    again = JsonlSink(str(tmp_path), "s")
    assert again.open(retry_errors=True) == {"a"}
    again.close()
    assert JsonlSink(str(tmp_path), "s").open() == {"a"}
