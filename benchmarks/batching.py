"""How full each codec's batches get, and at what cost: ``python benchmarks/batching.py``.

The corpus of the "full batches" acceptance: 60 clips of real speech (espeak-ng), 1 to 20 s
long, in random order, in one tar shard; a 120 s batch budget. For each codec (its tiny
random configuration, unless ``--model-dir`` holds ``<codec>/`` folders of real weights),
``audiomill bench`` runs it end to end and reports ``mean_batch_clips`` and
``padding_fraction`` of the real runner's model calls, with its default (exact) batching
(the "masked" codecs batch any lengths: the share of their codes equal to those of one-length
batches is measured, and is 100 %); for the other codecs, again with ``--batching padded``,
with the share of its codes equal to the exact ones. Prints one JSON object a codec, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time


def make_corpus(folder: str, clips: int, seed: int) -> str:
    from audiomill.corpus import encode_audio, speech, write_tar

    rng = random.Random(seed)
    members = []
    for number in range(clips):
        samples, rate = speech(rng.uniform(1.0, 20.0), seed=number)
        extension = ("mp3", "flac", "wav")[number % 3]
        members.append((f"clips/{number:03d}.{extension}", encode_audio(samples, rate, extension)))
    rng.shuffle(members)
    path = os.path.join(folder, "corpus.tar")
    write_tar(path, members)
    return path


def bench(codec: str, corpus: str, batching: str, model_dir: str | None, work: str) -> dict:
    weights = ["--model-path", os.path.join(model_dir, codec)] if model_dir else ["--tiny"]
    command = [sys.executable, "-m", "audiomill", "bench", "--codec", codec, *weights, "--corpus", corpus,
               "--batch-seconds", "120", "--no-naive", "--json", "--batching", batching, "--device", "cpu",
               "--work-dir", os.path.join(work, f"{codec}-{batching}")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"codec": codec, "batching": batching, "error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from audiomill.codecs import all_codecs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", nargs="*", default=sorted(all_codecs()))
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--model-dir", default=None, help="a folder of <codec>/ weight folders (default: tiny)")
    args = parser.parse_args()
    infos = all_codecs()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        corpus = make_corpus(work, args.clips, args.seed)
        for codec in args.codecs:
            modes = ["exact"] if infos[codec].batching == "masked" else ["exact", "padded"]
            for mode in modes:
                figures = bench(codec, corpus, mode, args.model_dir, work)
                print(json.dumps(figures), flush=True)
                rows.append(figures)
    print(f"\n{time.strftime('%Y-%m-%d')}, {rows[0].get('device', '?') if rows else '?'}\n")
    print("| codec | batching | mean clips a call | padding | codes equal to exact | end to end (audio s / s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['codec']} | {r['batching']} | error: {r['error'][:80]} | | | |")
            continue
        same = r.get("identical_codes_vs_exact")
        print(f"| {r['codec']} | {r['batching']} | {r['mean_batch_clips']:.2f} | {100 * r['padding_fraction']:.1f} % | "
              f"{'(one length)' if same is None else f'{100 * same:.2f} %'} | {r['end_to_end']:.1f} |")


if __name__ == "__main__":
    main()
