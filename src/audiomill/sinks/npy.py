"""``npy``: each record's codes as a ``.npy`` file, as IndexTTS-style training code reads them, with a
manifest of the records beside them.

A shard gives ``<shard>/<key>.npy`` per record with codes (the key as WebDataset names samples, see
:func:`~audiomill.sinks.journal.sample_name`), and ``<shard>.npy.jsonl``: the shard's records in
order, one JSON line each, without the codes, with ``codes_file`` (the ``.npy``, relative to the
manifest's folder). One level of codes is a 1-D array ``[frames]``; codebooks of one length are
``[codebooks, frames]``; levels of different lengths (SNAC) are one 1-D array of them all, one
after another, split by the record's level lengths. int16 where the codebook fits, else int32. Which
field holds the codes, and which their lengths, the stage's declared types say (``codes<...>`` and
``shape``, see :data:`~audiomill.sinks.FIELD_TYPES`); a record with no codes field is its line only.

The manifest is the shard's final file: the ``.npy`` files are written first (each through a
temporary name), the manifest last and renamed into place, so a shard killed before its manifest
is written again, to the same bytes.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from audiomill.sinks import SchemaStore, codes_field, shape_field
from audiomill.sinks.journal import dumps, sample_name

SUFFIX = ".npy.jsonl"


def codes_array(tokens: list[list[int]], dtype: str, flat_single: bool = True) -> np.ndarray:
    """A record's codes as one array: one level ``[T]`` (``[1, T]`` unless ``flat_single``), codebooks of one
    length ``[K, T]``, levels of different lengths one after another (see :func:`tokens_from`)."""
    if len(tokens) == 1 and flat_single:
        return np.asarray(tokens[0], dtype=dtype)
    if len({len(level) for level in tokens}) == 1:
        return np.asarray(tokens, dtype=dtype).reshape(len(tokens), -1)
    return np.concatenate([np.asarray(level, dtype=dtype) for level in tokens])


def tokens_from(array: np.ndarray, shape: list[int] | None) -> list[list[int]]:
    """The codes back from :func:`codes_array`'s array and the length of each level (``shape``)."""
    if array.ndim == 2:
        return array.tolist()
    if not shape or len(shape) == 1:
        return [array.tolist()]
    return [part.tolist() for part in np.split(array, np.cumsum(shape)[:-1])]


def _parts_folder(path: str) -> tuple[str, str]:
    """The folder a manifest's ``.npy`` files go in, and its name relative to the manifest's folder."""
    folder, name = os.path.split(path)
    shard = name[: name.index(SUFFIX)] if SUFFIX in name else name
    return os.path.join(folder, shard), shard


class NpyFormat:
    name = "npy"
    extension = SUFFIX[1:]
    needs = ""

    def write(self, path: str, records: Iterable[dict[str, Any]], fields: dict[str, str],
              schema: SchemaStore) -> None:
        codes, dtype = codes_field(fields) or ("", "int32")
        parts, relative = _parts_folder(path)
        with open(path, "wb") as manifest:
            for record in records:
                line = {k: v for k, v in record.items() if k != codes}
                if isinstance(record.get(codes), list):
                    name = f"{sample_name(str(record['key']))}.npy"
                    target = os.path.join(parts, name)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    buffer = io.BytesIO()
                    np.save(buffer, codes_array(record[codes], dtype), allow_pickle=False)
                    with open(target + ".tmp", "wb") as handle:
                        handle.write(buffer.getvalue())
                    os.replace(target + ".tmp", target)
                    line["codes_file"] = f"{relative}/{name}"
                manifest.write(dumps(line))
            manifest.flush()
            os.fsync(manifest.fileno())

    def read(self, path: str, fields: dict[str, str]) -> Iterator[dict[str, Any]]:
        folder = os.path.dirname(path)
        codes, shape = (codes_field(fields) or ("", ""))[0], shape_field(fields)
        with open(path, "rb") as handle:
            for raw in handle:
                record = json.loads(raw)
                name = record.pop("codes_file", None) if codes else None
                if name is not None:
                    array = np.load(os.path.join(folder, name), allow_pickle=False)
                    record[codes] = tokens_from(array, record.get(shape) if shape else None)
                yield record

    def parts(self, path: str) -> list[str]:
        """The ``.npy`` files a manifest names, as paths."""
        folder = os.path.dirname(path)
        with open(path, "rb") as handle:
            return [os.path.join(folder, json.loads(raw)["codes_file"]) for raw in handle
                    if b'"codes_file"' in raw]


FORMATS = {"npy": NpyFormat()}
