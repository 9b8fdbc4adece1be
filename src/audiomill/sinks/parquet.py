"""Apache Parquet (zstd), one file per shard, every file of an output with the same schema.

The stage's declared fields are typed columns (codes as ``list<list<int16>>`` when the
codebook fits in int16, else int32: ``datasets`` loads them as ``List(List(int16))`` with no
glue). Metadata fields become typed columns too (string, int64, float64, bool). Which
metadata columns an output has is fixed by the first of its shards to finish and kept in
``_audiomill/schema/``; in every later shard a field outside those columns, or a value of
another type, goes into the ``meta_json`` column as JSON (null when there is none), so that
every file of the output loads as one table. A name that is not UTF-8 is written readable
in its column (``bad\\xff.wav``) and exactly in ``meta_json`` (``"bad\\udcff.wav"``, as in the
JSON formats); :meth:`ParquetFormat.read` gives back the exact one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from audiomill.sinks import SchemaStore, storage_type

COMPRESSION = "zstd"
ROWS_PER_BATCH = 512
EXTRA_COLUMN = "meta_json"


def arrow_type(spec: str):
    import pyarrow as pa

    scalars = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
               "int16": pa.int16(), "int32": pa.int32(), "float32": pa.float32()}
    if spec.startswith("list<") and spec.endswith(">"):
        return pa.list_(arrow_type(spec[5:-1]))
    return scalars[spec]


def value_type(value: Any) -> str | None:
    """The column type of a metadata value, or None for one kept as JSON (lists, objects, null)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if -2**63 <= value < 2**63 else None
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return None


def _fits(value: Any, spec: str) -> bool:
    found = value_type(value)
    return found == spec or (spec == "float64" and found == "int64")


class ParquetFormat:
    name = "parquet"
    extension = "parquet"
    needs = "pyarrow"

    def write(self, path: str, records: Iterable[dict[str, Any]], fields: dict[str, str],
              schema: SchemaStore) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = iter(records)
        first = list(_take(rows, ROWS_PER_BATCH))
        proposal: dict[str, str] = {}
        for record in first:
            for name, value in record.items():
                if name not in fields and name not in proposal and (found := value_type(value)):
                    proposal[name] = found
        meta = schema.fixed(dict(sorted(proposal.items())))
        columns = {**{name: storage_type(spec) for name, spec in fields.items()}, **{k: v for k, v in meta.items() if k not in fields}}
        arrow = pa.schema([pa.field(name, arrow_type(spec)) for name, spec in columns.items()]
                          + [pa.field(EXTRA_COLUMN, pa.string())])
        with pq.ParquetWriter(path, arrow, compression=COMPRESSION) as writer:
            batch = first
            while batch:
                writer.write_table(pa.Table.from_pylist([_row(r, columns) for r in batch], schema=arrow))
                batch = list(_take(rows, ROWS_PER_BATCH))
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())

    def read(self, path: str, fields: dict[str, str]) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for row in table.to_pylist():
            extra = row.pop(EXTRA_COLUMN, None)
            record = {k: v for k, v in row.items() if v is not None}
            if extra:
                record.update(json.loads(extra))
            yield record


def _row(record: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in record.items():
        spec = columns.get(name)
        if spec is not None and (spec.startswith("list") or value is None or _fits(value, spec)):
            row[name] = value
            if isinstance(value, str) and not _is_utf8(value):
                # a name that is not UTF-8: readable in its column, exact in meta_json (read() restores it)
                row[name] = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                extra[name] = value
        else:
            extra[name] = value
    row[EXTRA_COLUMN] = _json(extra) if extra else None
    return row


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json(value: dict[str, Any]) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if _is_utf8(text) else json.dumps(value, ensure_ascii=True, sort_keys=True)


def _take(rows: Iterator[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
    for _ in range(count):
        try:
            yield next(rows)
        except StopIteration:
            return


FORMATS = {"parquet": ParquetFormat()}
