"""JSON Lines, one record a line, in the shard's order: ``jsonl``, and ``jsonl.gz``.

``jsonl.gz`` is the same bytes, gzipped deterministically (no file name, mtime 0, level 6),
so a rerun after any kill gives byte-identical files in either format.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from audiomill.sinks import SchemaStore
from audiomill.sinks.journal import dumps

GZIP_LEVEL = 6


class JsonlFormat:
    name = "jsonl"
    extension = "jsonl"
    needs = ""

    def _open_read(self, path: str):
        return open(path, "rb")

    def write(self, path: str, records: Iterable[dict[str, Any]], fields: dict[str, str],
              schema: SchemaStore) -> None:
        with open(path, "wb") as raw:
            with self._wrap(raw) as handle:
                for record in records:
                    handle.write(dumps(record))
            raw.flush()
            os.fsync(raw.fileno())

    def _wrap(self, raw):
        return _NoClose(raw)

    def read(self, path: str, fields: dict[str, str]) -> Iterator[dict[str, Any]]:
        with self._open_read(path) as handle:
            for line in handle:
                yield json.loads(line)


class JsonlGzFormat(JsonlFormat):
    name = "jsonl.gz"
    extension = "jsonl.gz"

    def _wrap(self, raw):
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0)

    def _open_read(self, path: str):
        return gzip.open(path, "rb")


class _NoClose:
    """The raw file as a context manager that leaves it open (the caller fsyncs it)."""

    def __init__(self, raw) -> None:
        self.raw = raw

    def __enter__(self):
        return self.raw

    def __exit__(self, *exc) -> None:
        return None


FORMATS = {"jsonl": JsonlFormat(), "jsonl.gz": JsonlGzFormat()}
