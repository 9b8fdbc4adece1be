"""Turn the user's input paths into a list of shards.

- ``x.tar`` (``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``): one shard named ``x``;
- ``x.flac`` (any audio file): one shard named ``x`` holding that file;
- ``x.jsonl``: a manifest, sliced into shards of ``files_per_shard`` lines named ``x-00000``...;
- a folder holding tar archives: one shard per archive;
- any other folder: its audio files, recursively, sliced like a manifest;
- ``hf:SPEC``: a Hugging Face dataset (see :mod:`audiomill.sources.hf`), sliced into shards of rows.
Glob patterns are expanded if the shell did not do it. With a ``listing_dir`` (the plan's),
folders and manifests are listed into it once and their shards read from the listing
(see :mod:`audiomill.sources.listing`); a listing already there is used as it is.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from audiomill.errors import UsageError
from audiomill.items import Shard
from audiomill.sources import listing as listings
from audiomill.sources.reader import audio_extensions, is_audio_name

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MANIFEST_SUFFIXES = (".jsonl", ".json")
_NUMBER = re.compile(r"(\d+)$")

if TYPE_CHECKING:
    from audiomill.sources.hf import Columns


def strip_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def shard_number(name: str) -> int | None:
    """The number a shard's name ends with (``shard-000123`` -> 123), if any."""
    match = _NUMBER.search(name)
    return int(match.group(1)) if match else None


def expand_inputs(inputs: list[str]) -> list[str]:
    paths: list[str] = []
    for raw in inputs:
        if raw.startswith("hf:"):  # a dataset: resolved when its shards are made
            paths.append(raw)
        elif os.path.exists(raw):
            paths.append(raw)
        elif glob.has_magic(raw):
            matched = sorted(glob.glob(raw))
            if not matched:
                raise UsageError(f"no input matches {raw!r}")
            paths.extend(matched)
        else:
            raise UsageError(f"input not found: {raw}")
    return paths


def discover_shards(
    inputs: list[str], files_per_shard: int = 1000, start: int | None = None, end: int | None = None,
    listing_dir: str | None = None, extensions: list[str] | tuple[str, ...] | None = None,
    columns: "Columns | None" = None, add: dict[str, str] | None = None,
) -> list[Shard]:
    """Every shard of ``inputs``; ``start``/``end`` (inclusive) keep numbered shards in range;
    ``extensions`` (``--extensions``) the files read as audio, in folders and archives alike;
    ``columns`` what the columns of ``hf:`` datasets are; ``add`` constants for every item's metadata."""
    from audiomill.sources import hf

    if files_per_shard < 1:
        raise UsageError("--files-per-shard must be at least 1")
    chosen = audio_extensions(extensions)
    constants = tuple(sorted((add or {}).items()))
    columns = columns or hf.Columns()
    names: dict[str, str] = {}  # dataset shard stems taken, by dataset
    shards: list[Shard] = []
    for path in expand_inputs(inputs):
        if hf.is_hf(path):
            for dataset in hf.resolve(path):
                hf.check_columns(dataset, columns, path)
                shards.extend(replace(shard, add=constants)
                              for shard in hf.dataset_shards([dataset], files_per_shard, listing_dir, columns, names))
            continue
        shards.extend(replace(shard, extensions=chosen, add=constants)
                      for shard in _shards_of(os.path.abspath(path), files_per_shard, listing_dir, chosen))
    if start is not None or end is not None:
        lo = -1 if start is None else start
        hi = float("inf") if end is None else end
        shards = [s for s in shards if (n := shard_number(s.name)) is not None and lo <= n <= hi]
    seen: dict[str, str] = {}
    unique: list[Shard] = []
    for shard in shards:
        ident = f"{shard.path}:{shard.start}"
        if shard.name in seen:
            if seen[shard.name] == ident:
                continue
            raise UsageError(
                f"two inputs would write the same output {shard.name!r}: {seen[shard.name].rsplit(':', 1)[0]} "
                f"and {shard.path}; tokenize them into separate --out folders"
            )
        seen[shard.name] = ident
        unique.append(shard)
    if not unique:
        raise UsageError("no shards found in the inputs" + (" within --start/--end" if start or end else ""))
    return unique


def _shards_of(path: str, files_per_shard: int, listing_dir: str | None,
               extensions: tuple[str, ...] | None) -> list[Shard]:
    base = os.path.basename(path.rstrip("/"))
    if os.path.isfile(path):
        if path.endswith(TAR_SUFFIXES):
            return [Shard(name=strip_suffix(base, TAR_SUFFIXES), kind="tar", path=path)]
        if path.endswith(MANIFEST_SUFFIXES):
            stem = strip_suffix(base, MANIFEST_SUFFIXES)
            if listing_dir is None:
                return _slices(stem, "manifest", path, _count_lines(path), files_per_shard)
            listing = os.path.join(listing_dir, f"{stem}.manifest.jsonl")
            if not os.path.exists(listing):
                listings.copy_manifest(path, listing)
            return listings.slices(listing, stem, "manifest", path, files_per_shard)
        if is_audio_name(base, extensions):
            return [Shard(name=base.rsplit(".", 1)[0], kind="file", path=path)]
        raise UsageError(f"not a tar archive, a .jsonl manifest, an audio file or a folder: {path}")
    tars = sorted(n for n in os.listdir(path) if n.endswith(TAR_SUFFIXES) and os.path.isfile(os.path.join(path, n)))
    if tars:
        loose = next(listings.walk_audio_files(path, extensions), None)
        if loose is not None:
            raise UsageError(f"{path} holds both tar archives and audio files (such as {loose}): pass the archives "
                             f"({os.path.join(path, '*.tar')}) or the audio files' folder, not both at once")
        return [Shard(name=strip_suffix(n, TAR_SUFFIXES), kind="tar", path=os.path.join(path, n)) for n in tars]
    if listing_dir is None:
        count = sum(1 for _ in listings.walk_audio_files(path, extensions))
        if count == 0:
            raise UsageError(f"no tar archives or audio files in {path}")
        return _slices(base, "dir", path, count, files_per_shard)
    listing = os.path.join(listing_dir, f"{base}.files.jsonl")
    if os.path.exists(listing):
        listings.report_changes(path, listing, extensions)
    elif listings.list_folder(path, listing, extensions) == 0:
        os.unlink(listing)
        raise UsageError(f"no tar archives or audio files in {path}")
    return listings.slices(listing, base, "dir", path, files_per_shard)


def _slices(stem: str, kind: str, path: str, count: int, per_shard: int) -> list[Shard]:
    return [
        Shard(name=f"{stem}-{i // per_shard:05d}", kind=kind, path=path, start=i, count=min(per_shard, count - i))
        for i in range(0, count, per_shard)
    ]


def _count_lines(path: str) -> int:
    try:
        with open(path, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read manifest {path}: {exc}") from exc
