"""WebDataset tars: ``wds``, one ``<shard>.tar`` of samples, ``<key>.codes.npy`` + ``<key>.json`` each.

Readable by ``webdataset.WebDataset`` with no glue: a sample's key is the record's key as
WebDataset names samples (no dot in its last part: see :func:`~audiomill.sinks.journal.sample_name`),
``codes.npy`` its codes, ``json`` the rest of its record. Codes of levels of one length (codebooks)
are one ``[levels, frames]`` array; levels of different lengths (SNAC) are one array of them all,
one level after another, and the record's ``token_shape`` says where each ends. The integer type is
the stage's (int16 where the codebook fits). A record without codes (a vad record) is its JSON only.
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

from audiomill.sinks import SchemaStore
from audiomill.sinks.journal import dumps, sample_name
from audiomill.sinks.npy import codes_array, tokens_from

CODES = "tokens"


class WdsFormat:
    name = "wds"
    extension = "tar"
    needs = ""

    def write(self, path: str, records: Iterable[dict[str, Any]], fields: dict[str, str],
              schema: SchemaStore) -> None:
        kind = fields.get(CODES, "list<list<int32>>")
        dtype = "int16" if "int16" in kind else "int32"
        with open(path, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for record in records:
                    sample = sample_name(str(record["key"]))
                    rest = {k: v for k, v in record.items() if k != CODES}
                    members = [("json", dumps(rest))]
                    if isinstance(record.get(CODES), list):
                        buffer = io.BytesIO()
                        np.save(buffer, codes_array(record[CODES], dtype, flat_single=False), allow_pickle=False)
                        members.insert(0, ("codes.npy", buffer.getvalue()))
                    for extension, data in members:
                        info = tarfile.TarInfo(f"{sample}.{extension}")
                        info.size, info.mtime, info.mode = len(data), 0, 0o644
                        tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())

    def read(self, path: str) -> Iterator[dict[str, Any]]:
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
                    if codes is not None:
                        record[CODES] = tokens_from(codes, record.get("token_shape"))
                    codes = None
                    yield record


FORMATS = {"wds": WdsFormat()}
