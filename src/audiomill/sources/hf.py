"""Hugging Face datasets: ``hf:SPEC`` inputs, read as a stream of rows with pyarrow.

``SPEC`` is one of:

- a ``save_to_disk`` folder: a dataset (``state.json``) or a dataset dict (``dataset_dict.json``,
  a folder per split; ``hf:FOLDER:SPLIT`` takes one split, else every split is a dataset);
- a Parquet or Arrow file with an ``Audio`` column, or a folder of them (read in sorted order);
- a hub id, ``hf:ID[:CONFIG[:SPLIT]]``, loaded with ``datasets.load_dataset`` from the local cache
  (online if the network allows; with ``HF_HUB_OFFLINE=1`` a dataset not in the cache is one line).

Audio is the ``Audio`` feature's ``{bytes, path}`` struct (a plain string column is taken as
paths): the bytes go to audiomill's own decoder, never through ``datasets``' decoding (its
torchcodec path does not load beside a CPU-only torch). The row's other columns become the
item's metadata (``--text-column`` as ``text``, ``--speaker-column`` as ``speaker``; binary
columns are left out), and ``--id-column`` its key, else the row's index in its split.

A dataset's data files and their row counts are listed once, when the plan is made, into the
plan's ``listing/<name>.hf.json``; its shards are slices of ``files_per_shard`` rows over them,
named ``<name>-00000``... (``<name>``: the folder, file or hub id, with the split). Rows are read
a record batch at a time (Arrow files memory-mapped, Parquet by row group), so memory stays flat
whatever the dataset's size. Two different datasets with one name get distinct shard names; the
same dataset given twice is read once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from audiomill.errors import ShardError, UsageError
from audiomill.items import Item, Shard
from audiomill.sources.reader import Want, register

PREFIX = "hf:"
BATCH_ROWS = 64  # rows decoded from Arrow at once: a few MB of audio bytes
REMAP_BYTES = 64 << 20  # an Arrow file is mapped afresh after this much has been read from it
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Columns:
    """Which columns of a dataset are what (``--audio-column`` and the others) and the constants
    ``--add KEY=VALUE`` puts into every record."""

    audio: str = "audio"
    text: str | None = None
    speaker: str | None = None
    id: str | None = None

    def roles(self) -> tuple[tuple[str, str], ...]:
        return tuple((role, name) for role, name in (("audio", self.audio), ("text", self.text),
                                                    ("speaker", self.speaker), ("id", self.id)) if name)

    @classmethod
    def of(cls, roles: tuple[tuple[str, str], ...] | list) -> "Columns":
        return cls(**{role: name for role, name in roles})


@dataclass
class Dataset:
    """One dataset (one split) to read: its shard name stem, its data files and their row counts."""

    spec: str  # what identifies it (an absolute path, or a hub id with config and split)
    name: str
    files: list[tuple[str, int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.files)


def is_hf(text: str) -> bool:
    return text.startswith(PREFIX)


# -- plan time: a spec into datasets, datasets into shards ----------------------------------------

def resolve(text: str) -> list[Dataset]:
    """The datasets ``hf:SPEC`` names (several for a dataset dict given without a split)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"{text}: Hugging Face datasets need the extra audiomill[datasets] ({exc}): "
                         f"pip install 'audiomill[datasets]'") from None
    spec = text[len(PREFIX):]
    if not spec:
        raise UsageError(f"{text}: expected hf:FOLDER, hf:FILE.parquet, hf:FILE.arrow or hf:HUB_ID[:CONFIG[:SPLIT]]")
    if os.path.exists(spec):
        return _local(os.path.abspath(spec), None, text)
    path, sep, split = spec.rpartition(":")
    if sep and path and os.path.exists(path):
        return _local(os.path.abspath(path), split, text)
    if spec.startswith(("/", "./", "../", "~")) or spec.split(":")[0].count("/") > 1:
        raise UsageError(f"{text}: no such file or folder")
    return _hub(spec, text)


def _local(path: str, split: str | None, text: str) -> list[Dataset]:
    name = _name(os.path.basename(path.rstrip("/")).rsplit(".", 1)[0] if os.path.isfile(path)
                 else os.path.basename(path.rstrip("/")))
    if os.path.isfile(path):
        if split:
            raise UsageError(f"{text}: a single file has no splits")
        return [_dataset(path, name, [path], text)]
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        try:
            with open(os.path.join(path, "dataset_dict.json"), encoding="utf-8") as handle:
                splits = list(json.load(handle)["splits"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{text}: cannot read its dataset_dict.json: {exc}") from None
        if split is not None:
            if split not in splits:
                raise UsageError(f"{text}: no split {split!r}; its splits: {', '.join(splits)}")
            splits = [split]
        return [_dataset(f"{path}:{s}", f"{name}-{_name(s)}", _saved_files(os.path.join(path, s), text), text)
                for s in splits]
    if split:
        raise UsageError(f"{text}: {path} is not a dataset dict (no dataset_dict.json), so it has no split {split!r}")
    if os.path.isfile(os.path.join(path, "state.json")):
        return [_dataset(path, name, _saved_files(path, text), text)]
    files = sorted(os.path.join(folder, n) for folder, _, names in os.walk(path) for n in names
                   if n.endswith((".parquet", ".arrow")))
    if not files:
        raise UsageError(f"{text}: neither a saved dataset (state.json, dataset_dict.json) nor a folder of "
                         f".parquet or .arrow files")
    return [_dataset(path, name, files, text)]


def _saved_files(folder: str, text: str) -> list[str]:
    try:
        with open(os.path.join(folder, "state.json"), encoding="utf-8") as handle:
            names = [entry["filename"] for entry in json.load(handle)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{text}: cannot read {os.path.join(folder, 'state.json')}: {exc}") from None
    return [os.path.join(folder, name) for name in names]


def _hub(spec: str, text: str) -> list[Dataset]:
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UsageError(f"{text}: expected hf:HUB_ID[:CONFIG[:SPLIT]]")
    repo, config, split = [part or None for part in (parts + ["", ""])[:3]]
    try:
        import datasets
    except ImportError as exc:
        raise UsageError(f"{text}: a hub dataset needs the extra audiomill[datasets] ({exc}): "
                         f"pip install 'audiomill[datasets]'") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        loaded = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:  # datasets raises many kinds: each is the one line of this input
        where = " (HF_HUB_OFFLINE is set: only the local cache is searched)" if offline else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{text}: cannot load {repo}{where}: {first}") from None
    named = {split: loaded} if split is not None else dict(loaded)
    stem = _name(repo.replace("/", "__") + (f"-{config}" if config else ""))
    return [_dataset(f"{repo}:{config or ''}:{s}", f"{stem}-{_name(s)}", [c["filename"] for c in d.cache_files], text)
            for s, d in named.items()]


def _dataset(spec: str, name: str, files: list[str], text: str) -> Dataset:
    counted = []
    for path in files:
        try:
            counted.append((path, _count_rows(path)))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{text}: cannot read {path}: {exc}") from None
    return Dataset(spec, name, counted)


def _name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._-") or "dataset"


def _count_rows(path: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        return pq.ParquetFile(path).metadata.num_rows
    try:
        with pa.memory_map(path) as source:
            return sum(batch.num_rows for batch in pa.ipc.open_stream(source))
    except pa.ArrowInvalid:
        with pa.memory_map(path) as source:
            return pa.ipc.open_file(source).count_rows()


def _schema(path: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        return pq.ParquetFile(path).schema_arrow
    with pa.memory_map(path) as source:
        try:
            return pa.ipc.open_stream(source).schema
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source).schema


def check_columns(dataset: Dataset, columns: Columns, text: str) -> None:
    """The columns named exist, and the audio column holds audio (bytes and path, or a path)."""
    import pyarrow as pa

    if not dataset.files:
        return
    schema = _schema(dataset.files[0][0])
    names = schema.names
    for role, column in columns.roles():
        if column not in names:
            raise UsageError(f"{text}: no column {column!r} for --{role}-column; its columns: {', '.join(names)}")
    kind = schema.field(columns.audio).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or (pa.types.is_struct(kind) and {"bytes", "path"} & {kind.field(i).name for i in range(kind.num_fields)})):
        raise UsageError(f"{text}: column {columns.audio!r} is {kind}, not audio (a struct of bytes and path, as "
                         f"datasets' Audio feature stores it, or a string path): name it with --audio-column")


def dataset_shards(datasets_: list[Dataset], files_per_shard: int, listing_dir: str | None, columns: Columns,
                   taken: dict[str, str]) -> list[Shard]:
    """Shards of ``files_per_shard`` rows; ``taken`` (shard name stem -> dataset spec) keeps two
    different datasets of one name apart (the later gets the hash of its spec) and leaves the
    same dataset given twice as one."""
    shards = []
    for dataset in datasets_:
        name = dataset.name
        if taken.get(name, dataset.spec) != dataset.spec:
            name = f"{name}-{hashlib.sha1(dataset.spec.encode()).hexdigest()[:8]}"
        taken.setdefault(name, dataset.spec)
        listing = None
        if listing_dir is not None:
            listing = os.path.join(listing_dir, f"{name}.hf.json")
            if not os.path.exists(listing):
                tmp = f"{listing}.tmp{os.getpid()}"
                with open(tmp, "w", encoding="utf-8") as handle:
                    json.dump({"spec": dataset.spec, "files": dataset.files}, handle)
                os.replace(tmp, listing)
        rows = dataset.rows
        shards += [Shard(name=f"{name}-{first // files_per_shard:05d}", kind="hf", path=f"{PREFIX}{dataset.spec}",
                         start=first, count=min(files_per_shard, rows - first), listing=listing,
                         columns=columns.roles())
                   for first in range(0, rows, files_per_shard)]
    return shards


# -- run time: a shard's rows as items ------------------------------------------------------------

def _files_of(shard: Shard) -> list[tuple[str, int]]:
    if shard.listing is not None:
        try:
            with open(shard.listing, encoding="utf-8") as handle:
                return [(path, rows) for path, rows in json.load(handle)["files"]]
        except (OSError, ValueError, KeyError) as exc:
            raise ShardError(f"cannot read the listing {shard.listing}: {exc}") from exc
    try:
        found = resolve(shard.path)  # not planned (bench, status): listed again
    except UsageError as exc:
        raise ShardError(str(exc)) from None
    spec = shard.path[len(PREFIX):]
    for dataset in found:
        if dataset.spec == spec:
            return dataset.files
    raise ShardError(f"{shard.path}: the dataset is not there any more")


def _batches(path: str, first: int, columns: list[str]) -> Iterator:
    """Record batches of ``columns`` of one data file from row ``first`` on (the first batch cut to it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        handle = pq.ParquetFile(path)
        groups, skip, row = [], first, 0
        for number in range(handle.metadata.num_row_groups):
            rows = handle.metadata.row_group(number).num_rows
            if row + rows > first:
                if not groups:
                    skip = first - row
                groups.append(number)
            row += rows
        if groups:
            for batch in handle.iter_batches(batch_size=BATCH_ROWS, row_groups=groups, columns=columns):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                yield batch.slice(skip)
                skip = 0
        return
    position = first
    while True:  # a fresh map every REMAP_BYTES: pages read stay resident while their map is open
        with pa.memory_map(path) as source:
            reader = opened = None
            try:
                reader = pa.ipc.open_stream(source)
                batches = iter(reader)
            except pa.ArrowInvalid:
                opened = pa.ipc.open_file(source)
                batches = (opened.get_batch(i) for i in range(opened.num_record_batches))
            skip, mapped, more = position, 0, False
            batch = piece = None
            for batch in batches:  # (skipping a batch reads only its metadata)
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch = batch.select(columns)
                for start in range(skip, batch.num_rows, BATCH_ROWS):
                    piece = batch.slice(start, BATCH_ROWS)
                    yield piece  # (taken whole before the next is asked for: the map may close after it)
                    position += piece.num_rows
                    mapped += piece.nbytes
                skip = 0
                if mapped >= REMAP_BYTES:
                    more = True
                    break
            batches = batch = piece = reader = opened = None  # nothing holds the map: it is unmapped as it closes
        if not more:
            return


def _plain(value):
    """A value as JSON can hold it (bytes left out: they are a column's payload, not metadata)."""
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not isinstance(v, (bytes, bytearray))}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@register("hf")
def read_dataset(shard: Shard, want: Want) -> Iterator[Item]:
    import pyarrow as pa

    columns = Columns.of(shard.columns)
    files = _files_of(shard)
    end = shard.start + (shard.count if shard.count is not None else sum(rows for _, rows in files))
    row = 0  # the index of the first row of the current file in the dataset
    index = 0
    for path, rows in files:
        if row + rows <= shard.start:
            row += rows
            continue
        if row >= end:
            break
        try:
            schema = _schema(path)
        except (OSError, pa.ArrowException) as exc:
            raise ShardError(f"cannot read {path}: {exc}") from exc
        wanted = [n for n in schema.names if n == columns.audio or not _binary(schema.field(n).type)]
        number = max(shard.start - row, 0) + row
        for batch in _batches(path, max(shard.start - row, 0), wanted):
            for values in batch.to_pylist():
                if number >= end:
                    break
                yield _row_item(shard, path, number, index, values, columns, want)
                number += 1
                index += 1
            if number >= end:
                break
        row += rows


def _binary(kind) -> bool:
    import pyarrow as pa

    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return True
    if pa.types.is_struct(kind):
        return any(_binary(kind.field(i).type) for i in range(kind.num_fields))
    return False


def _row_item(shard: Shard, path: str, number: int, index: int, values: dict, columns: Columns, want: Want) -> Item:
    ident = values.get(columns.id) if columns.id else None
    key = str(ident) if ident not in (None, "") else str(number)
    audio = values.get(columns.audio)
    data, where = (audio.get("bytes"), audio.get("path")) if isinstance(audio, dict) else (None, audio)
    meta = {}
    for name, value in values.items():
        if name in (columns.audio, columns.id):
            continue
        label = "text" if name == columns.text else "speaker" if name == columns.speaker else name
        meta[label] = _plain(value)
    item = Item(key=key, source=path, audio_file=where or "", index=index, meta=meta)
    if not want(key):
        item.skipped = True
    elif data:
        item.data = bytes(data)
    elif isinstance(where, str) and where:
        resolved = where if os.path.isabs(where) else os.path.join(os.path.dirname(path), where)
        if os.path.isfile(resolved):
            item.path = resolved
        else:
            item.error = f"row {number}: no audio bytes, and its path {where} is not a file here"
    else:
        item.error = f"row {number}: no audio in column {columns.audio!r}"
    return item
