"""Audio seconds per wall second: audiomill end to end vs the naive per-file loop, same corpus, same weights.

    python benchmarks/naive_vs_audiomill.py [--files 24] [--codec snac-24khz]

The corpus (espeak-ng speech as MP3 44.1 kHz stereo, FLAC 48 kHz, WAV 16 kHz, OGG)
is made on the spot; weights are seeded random (speed does not depend on them).
The full side-by-side benchmark against the model and decode ceilings is
'audiomill bench' (issue: Throughput).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tarfile
import tempfile
import time



def naive(paths: list[str], codec_name: str) -> tuple[float, float]:
    """One file at a time, decoded on the main thread, batch size one: what data-prep scripts do today."""
    import torch

    from audiomill.audio import decode
    from audiomill.codecs import load_codec

    codec = load_codec(codec_name, None)
    seconds = 0.0
    started = time.perf_counter()
    for path in paths:
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    continue
                audio = decode(archive.extractfile(member).read(), codec.sample_rate)
                with torch.inference_mode():
                    codes = codec.encode(torch.from_numpy(audio.samples)[None], torch.tensor([len(audio.samples)]))
                [c.tolist() for c in codes]
                seconds += len(audio.samples) / codec.sample_rate
    return seconds, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=24, help="files per shard (2 shards)")
    parser.add_argument("--long-seconds", type=float, default=120.0, help="length of one long file")
    parser.add_argument("--codec", default="snac-24khz", help="codec name")
    args = parser.parse_args()
    from audiomill.corpus import make_speech_shards

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_speech_shards(f"{tmp}/shards", 2, args.files, args.long_seconds)
        seconds, wall = naive(paths, args.codec)
        print(f"naive:      {seconds:8.1f} s audio in {wall:6.1f} s = {seconds / wall:6.2f} x real time")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "audiomill", "tokenize", *paths, "--out", f"{tmp}/out",
                        "--codec", args.codec, "--random-weights", "--progress", "none"], check=True,
                       capture_output=True)
        wall = time.perf_counter() - started
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"audiomill:  {seconds:8.1f} s audio in {wall:6.1f} s = {seconds / wall:6.2f} x real time "
              f"(whole command, model load included; peak RSS {rss:.0f} MB)")


if __name__ == "__main__":
    main()
