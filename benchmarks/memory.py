"""Peak RSS of `audiomill tokenize` does not grow with the files in a shard or with a file's length.

Three runs, each a fresh `audiomill tokenize` process on one input:
  few   -- a folder of 20 short speech files (1-4 s, MP3/FLAC/WAV);
  many  -- a folder of 2,000 such files (--many);
  long  -- one file of 2 hours (--long-seconds), FLAC, never held whole in memory.
The peak RSS of each run (the largest process of its tree, from wait4) is printed,
with the ratios many/few and long/few. Acceptance: both ratios <= 1.5.

    python benchmarks/memory.py [--many 2000] [--long-seconds 7200] [--model-path DIR] [--json]

Without --model-path it uses SNAC 24 kHz's tiny random configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_short_files(folder: str, count: int) -> None:
    from audiomill.corpus import SENTENCES, encode_audio, speak

    os.makedirs(folder, exist_ok=True)
    formats = ("mp3", "flac", "wav")
    encoded: dict[tuple[int, str], bytes] = {}
    for number in range(count):
        key = (number % len(SENTENCES), formats[number % 3])
        if key not in encoded:
            samples, rate = speak(SENTENCES[key[0]])
            encoded[key] = encode_audio(samples[: rate * 4], rate, key[1])
        with open(os.path.join(folder, f"utt{number:05d}.{key[1]}"), "wb") as handle:
            handle.write(encoded[key])


def write_long_file(path: str, seconds: float) -> None:
    """Speech repeated to ``seconds``, written block by block at 16 kHz FLAC."""
    import soundfile
    import soxr

    from audiomill.corpus import speech

    samples, rate = speech(60.0)
    block = soxr.resample(samples, rate, 16000).astype(np.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with soundfile.SoundFile(path, "w", 16000, 1, format="FLAC", subtype="PCM_16") as sound:
        left = int(seconds * 16000)
        while left > 0:
            sound.write(block[:left])
            left -= min(left, len(block))


def peak_rss_of_run(args: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MB of the largest process of the run's tree, wall seconds, exit code)."""
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "audiomill", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode not in (0, 3):
        raise SystemExit(f"audiomill {' '.join(args)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return usage.ru_maxrss / 1024, time.time() - started, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--few", type=int, default=20, help="files in the small shard")
    parser.add_argument("--many", type=int, default=2000, help="files in the large shard")
    parser.add_argument("--long-seconds", type=float, default=7200.0, help="length of the long file")
    parser.add_argument("--model-path", default=None, help="SNAC 24 kHz weights (default: tiny random config)")
    parser.add_argument("--work-dir", default=None, help="keep inputs and outputs here")
    parser.add_argument("--batch-seconds", type=float, default=0.0, help="passed to tokenize (default: its own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tokenize-args", default="", help="more tokenize flags, as one string (e.g. '--batching padded')")
    args = parser.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="audiomill-memory-")
    model = args.model_path
    if model is None:
        from audiomill.codecs.snac import CONFIG_24KHZ, TINY, save_random

        model = save_random(os.path.join(work, "tiny-snac"), dict(CONFIG_24KHZ, **TINY))
    inputs = {"few": os.path.join(work, "few"), "many": os.path.join(work, "many"),
              "long": os.path.join(work, "long")}
    if not os.path.isdir(inputs["few"]):
        write_short_files(inputs["few"], args.few)
    if not os.path.isdir(inputs["many"]):
        write_short_files(inputs["many"], args.many)
    long_path = os.path.join(inputs["long"], "talk.flac")
    if not os.path.exists(long_path):
        write_long_file(long_path, args.long_seconds)

    result: dict = {"few_files": args.few, "many_files": args.many, "long_seconds": args.long_seconds}
    for name, folder in inputs.items():
        out = os.path.join(work, f"out-{name}")
        rss, wall, _ = peak_rss_of_run(["tokenize", folder, "--out", out, "--model-path", model,
                                        "--files-per-shard", str(args.many + args.few), "--progress", "none",
                                        *(["--batch-seconds", str(args.batch_seconds)] if args.batch_seconds else []),
                                        *args.tokenize_args.split()])
        result[f"{name}_peak_rss_mb"] = round(rss, 1)
        result[f"{name}_wall_seconds"] = round(wall, 1)
    result["many_over_few"] = round(result["many_peak_rss_mb"] / result["few_peak_rss_mb"], 3)
    result["long_over_few"] = round(result["long_peak_rss_mb"] / result["few_peak_rss_mb"], 3)
    if args.json:
        print(json.dumps(result))
    else:
        for name in inputs:
            print(f"{name:<5} peak RSS {result[f'{name}_peak_rss_mb']:8.1f} MB  ({result[f'{name}_wall_seconds']} s)")
        print(f"many / few {result['many_over_few']:.2f}   long / few {result['long_over_few']:.2f}   (limit 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
