"""`audiomill resynth`: tokens back to audio, one WAV file per record, to listen to what a codec kept.

The codec and its weights are those the tokens were made with: read from the output
folder's plan (``--model-path`` overrides). Files are found and read through the format
the plan names, so JSONL, gzipped JSONL and Parquet outputs all work. Each WAV is trimmed or padded to the
record's ``num_samples`` at the codec's rate.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from audiomill.errors import UsageError
from audiomill.layouts import fields as layout_fields
from audiomill.layouts import tokens_of

# the codes as tokenize declares them: where npy and wds keep them apart, reading restores them here
CODE_FIELDS = layout_fields(None, 0, "int32")

log = logging.getLogger("audiomill")


def _format_of_file(path: str):
    from audiomill.sinks import format_names, get_format

    for name in sorted(format_names(), key=len, reverse=True):
        if path.endswith("." + name):
            return get_format(name)
    raise UsageError(f"{path}: not a file of any output format ({', '.join(format_names())})")


def locate(path: str) -> tuple[list[str], Any, dict]:
    """The final files at ``path``, their format, and the settings of the stage that wrote them.

    ``path`` is one output file, the output folder of a one-stage run, or one stage's folder
    (``OUT/<stage>``) of a pipeline."""
    from audiomill.runner.state import OutputFolder
    from audiomill.sinks import errors_name

    if not os.path.isdir(path):
        folder = OutputFolder(os.path.dirname(os.path.abspath(path)))
        group = ""
        if not folder.exists():
            folder, group = OutputFolder(os.path.dirname(folder.out)), os.path.basename(folder.out)
        return [path], _format_of_file(path), _settings(folder, group)
    folder, group = OutputFolder(os.path.abspath(path)), ""
    if not folder.exists():
        folder, group = OutputFolder(os.path.dirname(folder.out)), os.path.basename(folder.out)
    if not folder.exists():
        raise UsageError(f"{path} is not an audiomill output folder (no _audiomill/plan.json in it or above it)")
    groups = folder.groups()
    if group not in groups:
        raise UsageError(f"{path} holds the outputs of several stages: name one of them, "
                         f"{', '.join(os.path.join(path, g) for g in groups)}")
    fmt = folder.format()
    base = folder.group_dir(group)
    files = sorted(os.path.join(base, n) for n in os.listdir(base)
                   if n.endswith("." + fmt.extension) and not n.endswith(errors_name("")))
    return files, fmt, _settings(folder, group)


def _settings(folder, group: str) -> dict:
    if not folder.exists():
        return {}
    return folder.plan().settings(group)


def records_of(files: list[str], fmt) -> Iterator[dict]:
    """Token records of the files, in order."""
    for name in files:
        try:
            for record in fmt.read(name, CODE_FIELDS):
                if tokens_of(record) is not None:
                    yield record
        except (ValueError, OSError) as exc:
            raise UsageError(f"{name}: cannot read it as {fmt.name}: {exc}") from None


def codes_of(record: dict, codec) -> list:
    """A record's tokens as the codec's ``decode`` takes them: one tensor per level, then per-clip outputs."""
    import torch

    tokens = tokens_of(record)
    levels = len(codec.frame_hops())
    if levels == len(tokens):  # one token list per level (SNAC, one-codebook codecs)
        codes = [torch.tensor(row)[None] for row in tokens]
    else:
        codes = [torch.tensor(tokens)[None]]  # one level of codebooks [1, K, T] (RVQ codecs)
    for name in getattr(codec, "clip_fields", ()):
        if name not in record:
            raise UsageError(f"record {record.get('key')!r} has no {name}, which {codec.name} needs to decode")
        codes.append(torch.tensor(record[name])[None])
    return codes


def safe_name(key: str) -> str:
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return os.path.join(*parts) if parts else "record"


def resynth(path: str, wav_dir: str, model_path: str | None = None, limit: int | None = None,
            keys: set[str] | None = None, device: str = "cpu") -> int:
    """Write WAV files for the records at ``path``; returns how many were written."""
    import soundfile

    from audiomill.codecs import codec_info, load_codec, resolve_weights

    if not os.path.exists(path):
        raise UsageError(f"{path} does not exist")
    files, fmt, plan = locate(path)
    first = next(records_of(files, fmt), None)
    if first is None:
        raise UsageError(f"{path} has no token records")
    name = first["codec"]
    info = codec_info(name)
    weights = None if plan.get("random_weights") and not model_path else resolve_weights(
        info, model_path or plan.get("model_path"))
    if keys is not None:
        known = {record["key"] for record in records_of(files, fmt)}
        missing = sorted(keys - known)
        if missing:
            raise UsageError(f"--key {missing[0]!r}: no record has this key in {path} "
                             f"(keys look like {first['key']!r})" + (f"; {len(missing) - 1} more --key not found"
                                                                     if len(missing) > 1 else ""))
    codec = load_codec(name, weights, device, plan.get("codec_options") or {})
    if not hasattr(codec, "decode"):
        raise UsageError(f"{name} has no decoder")
    if weights is None:
        print(f"audiomill: note: {path} was tokenized with randomly initialised weights (--random-weights): "
              f"they are decoded with random weights too, so the audio is noise", file=sys.stderr)
    written = 0
    for record in records_of(files, fmt):
        if keys is not None and record["key"] not in keys:
            continue
        if record["codec"] != name:
            raise UsageError(f"{path} mixes codecs ({name}, {record['codec']}): resynthesise one at a time")
        wav = codec.decode(codes_of(record, codec))[0].float().cpu().numpy()
        wanted = int(record.get("num_samples") or len(wav))
        wav = wav[:wanted] if len(wav) >= wanted else np.pad(wav, (0, wanted - len(wav)))
        target = os.path.join(wav_dir, safe_name(record["key"]) + ".wav")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        soundfile.write(os.fsencode(target), np.clip(wav, -1.0, 1.0), codec.sample_rate, subtype="PCM_16")  # any name
        written += 1
        if limit is not None and written >= limit:
            break
    log.info("resynth: %d WAV files at %d Hz in %s", written, codec.sample_rate, wav_dir)
    return written
