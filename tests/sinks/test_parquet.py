"""Parquet: typed columns, one schema for every file of an output, read back by pyarrow and datasets."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from audiomill.runner.state import SchemaFile
from audiomill.sinks import get_format
from audiomill.sinks.journal import ShardSink

FIELDS = {"key": "string", "num_samples": "int64", "tokens": "codes<int16>"}


def write(folder, shard: str, records: list[dict]) -> str:
    out = ShardSink(str(folder), shard, get_format("parquet"), FIELDS, SchemaFile(str(folder / "schema.json")))
    out.open()
    for record in records:
        out.write(record["key"], [record], 1.0)
    out.finish([r["key"] for r in records])
    return out.path


def test_every_shard_has_the_schema_of_the_first_and_keeps_what_does_not_fit(tmp_path):
    first = write(tmp_path, "a", [{"key": "x", "num_samples": 5, "tokens": [[1, 2], [3]], "text": "hi", "lang": "en"}])
    second = write(tmp_path, "b", [{"key": "y", "num_samples": 6, "tokens": [[4]], "text": 7, "speaker": "s1"}])
    schemas = [pq.read_schema(p) for p in (first, second)]
    assert schemas[0].equals(schemas[1])
    assert schemas[0].field("tokens").type == pa.list_(pa.list_(pa.int16()))
    assert schemas[0].names == ["key", "num_samples", "tokens", "lang", "text", "meta_json"]
    row = pq.read_table(second).to_pylist()[0]
    assert row["lang"] is None and row["text"] is None and row["meta_json"] == '{"speaker": "s1", "text": 7}'
    assert list(get_format("parquet").read(second, FIELDS)) == [
        {"key": "y", "num_samples": 6, "tokens": [[4]], "speaker": "s1", "text": 7}]


def test_datasets_loads_the_files_as_one_table(tmp_path):
    import datasets

    paths = [write(tmp_path, f"s{i}", [{"key": f"k{i}", "num_samples": i, "tokens": [[i, i + 1]], "text": "t"}])
             for i in range(2)]
    loaded = datasets.load_dataset("parquet", data_files=paths, split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.features["tokens"] == datasets.List(datasets.List(datasets.Value("int16")))
    assert loaded["key"] == ["k0", "k1"] and loaded["tokens"] == [[[0, 1]], [[1, 2]]]
