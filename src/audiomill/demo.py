"""``audiomill demo``: a speech corpus made on the spot, tokenized end to end."""

from __future__ import annotations

import os
import sys

from audiomill.config import RunConfig
from audiomill.corpus import have_espeak, make_speech_shards
from audiomill.errors import WeightsNotFound


def run_demo(out: str, codec: str, model_path: str | None) -> int:
    from audiomill.codecs import codec_info, resolve_weights
    from audiomill.run import run

    shards_dir = os.path.join(out, "shards")
    voice = "espeak-ng speech" if have_espeak() else "synthetic voiced audio (install espeak-ng for speech)"
    print(f"audiomill demo: writing 3 tar shards of {voice} to {shards_dir}", file=sys.stderr)
    paths = make_speech_shards(shards_dir, shards=3, files_per_shard=5, long_seconds=64)  # one file is windowed
    random_weights = False
    try:
        resolve_weights(codec_info(codec), model_path)
    except WeightsNotFound:
        random_weights = True
    settings = {"codec": codec, "model_path": model_path, "random_weights": random_weights}
    cfg = RunConfig(inputs=paths, out=os.path.join(out, "tokens"),
                    stages=[{"group": "", "kind": "tokenize", "settings": settings}])
    code = run(cfg)
    print(f"audiomill demo: tokens in {cfg.out}; try 'audiomill status {cfg.out} --all'", file=sys.stderr)
    return code
