"""Wall time of one plan under each executor: local (one and N workers), SLURM, Ray.

    python benchmarks/executors.py [--workers N] [--shards 8] [--seconds-per-shard 66]

Makes tar shards of espeak-ng speech and a tiny random SNAC (or uses --model-path), runs the same
plan with each executor into its own folder, checks that every output is byte-identical to the
first, and prints audio seconds per wall second, start-up included (that is what a user waits
for). SLURM runs when SLURM_CONF or a reachable controller makes ``sinfo`` work (bring one up
on localhost with scripts/slurm-cluster.sh); Ray when it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from audiomill.corpus import encode_audio, speech, write_tar


def make_corpus(folder: str, shards: int, seconds: float) -> tuple[list[str], float]:
    paths, total = [], 0.0
    for number in range(shards):
        members = []
        for slot in range(4):
            samples, rate = speech(seconds / 4, seed=number * 4 + slot)
            members.append((f"b{number}/talk{slot}.flac", encode_audio(samples, rate, "flac")))
            total += len(samples) / rate
        path = os.path.join(folder, f"{number:06d}.tar")
        write_tar(path, members)
        paths.append(path)
    return paths, total


def run(name: str, args: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "audiomill", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return wall


def outputs(out: str) -> dict[str, bytes]:
    return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out)) if n.endswith(".jsonl")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="CPU workers for the N-worker runs")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--seconds-per-shard", type=float, default=66.0)
    parser.add_argument("--model-path", default=None, help="default: a tiny random SNAC 24 kHz")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="audiomill-executors-")
    os.makedirs(work, exist_ok=True)
    model = args.model_path
    if model is None:
        from audiomill.codecs.snac import save_random

        model = save_random(os.path.join(work, "snac"), dict(
            sampling_rate=24000, encoder_dim=8, encoder_rates=[2, 4, 8, 8], decoder_dim=32,
            decoder_rates=[8, 8, 4, 2], attn_window_size=None, codebook_size=64, codebook_dim=4,
            vq_strides=[4, 2, 1]), 2)
    shards_dir = os.path.join(work, "shards")
    os.makedirs(shards_dir, exist_ok=True)
    paths, audio = make_corpus(shards_dir, args.shards, args.seconds_per_shard)
    common = ["--model-path", model]
    n = args.workers
    runs = [("local, 1 CPU worker", ["--devices", "cpu"]),
            (f"local, {n} CPU workers", ["--devices", f"cpu:{n}"])]
    if shutil.which("sinfo") and subprocess.run(["sinfo"], capture_output=True).returncode == 0:
        runs.append((f"slurm, {n} array tasks of 1 CPU worker", ["--devices", "cpu", "--executor", "slurm",
                                                                  "--nodes-max", str(n), "--cpus-per-task", "1",
                                                                  "--until-done", "--poll-seconds", "0.5"]))
    try:
        import ray  # noqa: F401

        runs.append((f"ray, {n} tasks of 1 CPU worker", ["--devices", f"cpu:{n}", "--executor", "ray"]))
    except ImportError:
        pass
    figures, first = [], None
    for name, flags in runs:
        out = os.path.join(work, "out-" + str(len(figures)))
        shutil.rmtree(out, ignore_errors=True)
        wall = run(name, ["tokenize", *paths, "--out", out, *common, *flags])
        produced = outputs(out)
        first = first or produced
        figures.append({"executor": name, "wall_s": round(wall, 2), "audio_s_per_s": round(audio / wall, 1),
                        "identical": produced == first})
        print(f"{name:<42} {wall:7.1f} s  {audio / wall:7.1f} audio s/s  identical: {produced == first}",
              flush=True)
    print(json.dumps({"audio_seconds": round(audio, 1), "shards": args.shards, "cpu_cores": os.cpu_count(),
                      "runs": figures}))


if __name__ == "__main__":
    main()
