"""``--lines-per-file N``: a shard's records in files of at most N records each, in any format.

``<shard>-00000.<ext>``, ``<shard>-00001.<ext>``, ... hold the records in the shard's order, each
written by the chosen format (``jsonl.gz``: each part gzipped as that format gzips). The shard's
final file is ``<shard>.parts.json``, written last: the parts in order with their record counts.
A shard killed before it is written again, to the same bytes. The format of such an output is named
``<format>@<N>`` in the plan (:func:`audiomill.sinks.get_format` reads it back).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from audiomill.sinks import Format, OutputFormat, SchemaStore

INDEX = ".parts.json"


class RotatedFormat:
    extension = INDEX[1:]
    data_in_parts = True  # a dataset's files are the parts, not the index

    def __init__(self, base: Format, lines: int) -> None:
        self.base = base
        self.lines = lines
        self.name = str(OutputFormat(base.name, lines))
        self.needs = base.needs

    def write(self, path: str, records: Iterable[dict[str, Any]], fields: dict[str, str],
              schema: SchemaStore) -> None:
        folder, name = os.path.split(path)
        shard = name[: name.index(INDEX)]
        parts: list[list[Any]] = []
        chunk: list[dict[str, Any]] = []

        def flush() -> None:
            part = f"{shard}-{len(parts):05d}.{self.base.extension}"
            self.base.write(os.path.join(folder, part + ".tmp"), chunk, fields, schema)
            os.replace(os.path.join(folder, part + ".tmp"), os.path.join(folder, part))
            parts.append([part, len(chunk)])
            chunk.clear()

        for record in records:
            chunk.append(record)
            if len(chunk) == self.lines:
                flush()
        if chunk:
            flush()
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"format": self.base.name, "parts": parts}, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def parts(self, path: str) -> list[str]:
        with open(path, encoding="utf-8") as handle:
            return [os.path.join(os.path.dirname(path), name) for name, _ in json.load(handle)["parts"]]

    def read(self, path: str, fields: dict[str, str]) -> Iterator[dict[str, Any]]:
        for part in self.parts(path):
            yield from self.base.read(part, fields)
