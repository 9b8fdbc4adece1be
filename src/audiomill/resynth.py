"""`audiomill resynth`: tokens back to audio, one WAV file per record, to listen to what a codec kept.

The codec and its weights are those the tokens were made with: read from the output
folder's plan (``--model-path`` overrides). Each WAV is trimmed or padded to the
record's ``num_samples`` at the codec's rate.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import numpy as np

from audiomill.errors import UsageError

log = logging.getLogger("audiomill")


def records_of(path: str) -> Iterator[dict]:
    """Token records of one JSONL file, or of every complete shard of an output folder."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path)
                       if n.endswith(".jsonl") and not n.endswith(".errors.jsonl"))
    else:
        files = [path]
    for name in files:
        with open(name, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise UsageError(f"{name}:{number}: not a JSON line") from None
                if "tokens" in record:
                    yield record


def plan_of(path: str) -> dict:
    """The tokenize configuration of the output folder ``path`` is (or is in); {} if none."""
    from audiomill.runner.state import OutputFolder

    folder = OutputFolder(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))
    if not os.path.isfile(folder.plan_path):
        return {}
    return folder.read_plan().get("config", {})


def codes_of(record: dict, codec) -> list:
    """A record's tokens as the codec's ``decode`` takes them: one tensor per level, then per-clip outputs."""
    import torch

    tokens = record["tokens"]
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
    plan = plan_of(path)
    first = next(records_of(path), None)
    if first is None:
        raise UsageError(f"{path} has no token records")
    name = first["codec"]
    info = codec_info(name)
    weights = None if plan.get("random_weights") and not model_path else resolve_weights(
        info, model_path or plan.get("model_path"))
    codec = load_codec(name, weights, device, plan.get("codec_options") or {})
    if not hasattr(codec, "decode"):
        raise UsageError(f"{name} has no decoder")
    written = 0
    for record in records_of(path):
        if keys is not None and record["key"] not in keys:
            continue
        if record["codec"] != name:
            raise UsageError(f"{path} mixes codecs ({name}, {record['codec']}): resynthesise one at a time")
        wav = codec.decode(codes_of(record, codec))[0].float().cpu().numpy()
        wanted = int(record.get("num_samples") or len(wav))
        wav = wav[:wanted] if len(wav) >= wanted else np.pad(wav, (0, wanted - len(wav)))
        target = os.path.join(wav_dir, safe_name(record["key"]) + ".wav")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        soundfile.write(target, np.clip(wav, -1.0, 1.0), codec.sample_rate, subtype="PCM_16")
        written += 1
        if limit is not None and written >= limit:
            break
    log.info("resynth: %d WAV files at %d Hz in %s", written, codec.sample_rate, wav_dir)
    return written
