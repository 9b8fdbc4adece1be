"""Bytes on disk of each output format, for the same records: JSONL, gzipped JSONL, Parquet.

Tokenizes a generated speech corpus once per codec through the real command line (JSONL),
then writes the same records with the other formats' writers, exactly as a run's sinks
would, and prints one JSON object per codec:

    python benchmarks/formats.py [--seconds 600] [--codec snac-24khz --codec mimi] [--model-path DIR ...]

Without --model-path the codecs run with their full-size random weights (``--random-weights``):
random codes spread over the whole codebook, the least compressible case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from audiomill.bench.harness import make_corpus
from audiomill.codecs import codec_info, load_codec
from audiomill.runner.state import SchemaFile
from audiomill.sinks import get_format
from audiomill.stages.tokenize import tokenize_fields


def measure(codec: str, model_path: str | None, corpus: list[str], work: str) -> dict:
    out = os.path.join(work, codec)
    weights = ["--model-path", model_path] if model_path else ["--random-weights"]
    started = time.time()
    subprocess.run([sys.executable, "-m", "audiomill", "tokenize", *corpus, "--out", out, "--codec", codec, *weights,
                    "--progress", "none"], check=True)
    seconds = time.time() - started
    jsonl = get_format("jsonl")
    sizes = {"jsonl": 0, "jsonl.gz": 0, "parquet": 0}
    records = 0
    loaded = load_codec(codec, model_path, "cpu")
    fields = tokenize_fields(codec_info(codec).cardinality, tuple(getattr(loaded, "clip_fields", ())))
    for name in sorted(os.listdir(out)):
        if not name.endswith(".jsonl") or name.endswith(".errors.jsonl"):
            continue
        rows = list(jsonl.read(os.path.join(out, name), fields))
        records += len(rows)
        sizes["jsonl"] += os.path.getsize(os.path.join(out, name))
        for fmt in ("jsonl.gz", "parquet"):
            target = os.path.join(work, f"{codec}-{name}.{fmt}")
            get_format(fmt).write(target, iter(rows), fields, SchemaFile(os.path.join(work, f"{codec}-{fmt}.json")))
            sizes[fmt] += os.path.getsize(target)
    return {"codec": codec, "weights": model_path or "random (full size)", "records": records,
            "tokenize_seconds": round(seconds, 1), "bytes": sizes,
            "parquet_over_jsonl": round(sizes["parquet"] / sizes["jsonl"], 3),
            "jsonl_gz_over_jsonl": round(sizes["jsonl.gz"] / sizes["jsonl"], 3),
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the generated corpus")
    parser.add_argument("--codec", action="append", default=None, help="codecs to measure (repeatable)")
    parser.add_argument("--model-path", action="append", default=None, help="weights, one per --codec")
    args = parser.parse_args()
    codecs = args.codec or ["snac-24khz", "mimi"]
    paths = args.model_path or [None] * len(codecs)
    with tempfile.TemporaryDirectory() as work:
        corpus = make_corpus(os.path.join(work, "corpus"), args.seconds, min(60.0, args.seconds / 4))
        for codec, path in zip(codecs, paths):
            print(json.dumps(measure(codec, path, corpus, work)), flush=True)


if __name__ == "__main__":
    main()
