"""WebDataset tars: ``wds``, one ``<shard>.tar`` of samples, ``<key>.codes.npy`` + ``<key>.json`` each.

Readable by ``webdataset.WebDataset`` with no glue: a sample's key is the record's key as
WebDataset names samples (no dot in its last part: see :func:`~audiomill.sinks.journal.sample_name`),
``codes.npy`` its codes, ``json`` the rest of its record. Codes of levels of one length (codebooks)
are one ``[levels, frames]`` array; levels of different lengths (SNAC) are one array of them all,
one level after another, and the record's level lengths say where each ends. The integer type is
the stage's (int16 where the codebook fits). Which field holds the codes, and which their lengths, the
stage's declared types say (``codes<...>`` and ``shape``, see :data:`~audiomill.sinks.FIELD_TYPES`); a
record without codes (a vad record) is its JSON only.
The tar's metadata is fixed (mtime 0, owner 0, mode 644), so a rerun after any kill gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from audiomill.sinks import SchemaStore, codes_field, shape_field
from audiomill.sinks.journal import dumps, sample_name
from audiomill.sinks.npy import codes_array, tokens_from


class WdsFormat:
    name = "wds"
    extension = "tar"
    needs = ""

    def write(self, path: str, records: Iterable[dict[str, Any]], fields: dict[str, str],
              schema: SchemaStore) -> None:
        codes, dtype = codes_field(fields) or ("", "int32")
        with open(path, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for record in records:
                    sample = sample_name(str(record["key"]))
                    rest = {k: v for k, v in record.items() if k != codes}
                    members = [("json", dumps(rest))]
                    if isinstance(record.get(codes), list):
                        buffer = io.BytesIO()
                        np.save(buffer, codes_array(record[codes], dtype, flat_single=False), allow_pickle=False)
                        members.insert(0, ("codes.npy", buffer.getvalue()))
                    for extension, data in members:
                        info = tarfile.TarInfo(f"{sample}.{extension}")
                        info.size, info.mtime, info.mode = len(data), 0, 0o644
                        tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())

    def read(self, path: str, fields: dict[str, str]) -> Iterator[dict[str, Any]]:
        field, shape = (codes_field(fields) or ("", ""))[0], shape_field(fields)
        with tarfile.open(path) as tar:
            codes = None
            for info in tar:
                handle = tar.extractfile(info)
                if handle is None:
                    continue
                data = handle.read()
                if info.name.endswith(".codes.npy"):
                    codes = np.load(io.BytesIO(data), allow_pickle=False)
                elif info.name.endswith(".json"):
                    record = json.loads(data)
                    if codes is not None and field:
                        record[field] = tokens_from(codes, record.get(shape) if shape else None)
                    codes = None
                    yield record


FORMATS = {"wds": WdsFormat()}
