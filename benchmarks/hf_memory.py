"""Peak RSS of `audiomill tokenize hf:...` does not grow with the dataset's rows.

Two datasets of real speech (espeak-ng sentences cut to --clip-seconds, MP3/FLAC/WAV bytes in the
Audio feature's struct), written as datasets writes them: --few rows (200) and --many rows (20,000),
each as a Parquet file and as a save_to_disk folder. Each is tokenized by a fresh process, all rows
in one shard (the worst case: one shard's order is kept whole), and the peak RSS of the largest
process of its tree is printed with the ratio many/few. Acceptance (issue 16): <= 1.5.

    python benchmarks/hf_memory.py [--few 200] [--many 20000] [--clip-seconds 1] [--stage tokenize|vad] [--json]

--stage vad runs `audiomill vad` (silero) instead of tokenize (tiny SNAC): the same source, reader
and runner, at about a tenth of the CPU time per row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from memory import peak_rss_of_run  # noqa: E402


def write_dataset(folder: str, rows: int, clip_seconds: float) -> dict[str, str]:
    """A Parquet file and a save_to_disk folder of ``rows`` rows; returns their hf: inputs."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, Value

    from audiomill.corpus import SENTENCES, encode_audio, speak

    formats = ("mp3", "flac", "wav")
    clips = []
    for number in range(len(SENTENCES)):
        samples, rate = speak(SENTENCES[number])
        clips.append((encode_audio(samples[: int(rate * clip_seconds)], rate, formats[number % 3]),
                      formats[number % 3], SENTENCES[number]))
    features = Features({"audio": Audio(decode=False), "sentence": Value("string"), "speaker": Value("string")})
    metadata = {"huggingface": json.dumps({"info": {"features": features.to_dict()}})}
    schema = pa.schema([("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("sentence", pa.string()), ("speaker", pa.string())], metadata=metadata)
    os.makedirs(folder, exist_ok=True)
    parquet = os.path.join(folder, "rows.parquet")
    with pq.ParquetWriter(parquet, schema) as writer:
        for first in range(0, rows, 1000):
            chosen = [clips[n % len(clips)] for n in range(first, min(rows, first + 1000))]
            writer.write_table(pa.table({
                "audio": [{"bytes": data, "path": f"{first + i}.{ext}"} for i, (data, ext, _) in enumerate(chosen)],
                "sentence": [text for _, _, text in chosen],
                "speaker": [f"s{(first + i) % 7}" for i in range(len(chosen))]}, schema=schema), row_group_size=500)
    saved = os.path.join(folder, "saved")
    datasets.Dataset(pq.read_table(parquet)).save_to_disk(saved, num_shards=max(1, rows // 5000))
    return {"parquet": f"hf:{parquet}", "saved": f"hf:{saved}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--few", type=int, default=200)
    parser.add_argument("--many", type=int, default=20000)
    parser.add_argument("--clip-seconds", type=float, default=1.0)
    parser.add_argument("--model-path", default=None, help="SNAC 24 kHz weights (default: tiny random config)")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--stage", choices=("tokenize", "vad"), default="tokenize")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", default=None, metavar="DIR", help=argparse.SUPPRESS)  # (the writing process)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_dataset(args.write, args.rows, args.clip_seconds)
        return 0

    work = args.work_dir or tempfile.mkdtemp(prefix="audiomill-hf-memory-")
    model = args.model_path
    if model is None and args.stage == "tokenize":
        from audiomill.codecs.snac import CONFIG_24KHZ, TINY, save_random

        model = save_random(os.path.join(work, "tiny-snac"), dict(CONFIG_24KHZ, **TINY))
    result: dict = {"stage": args.stage, "few_rows": args.few, "many_rows": args.many,
                    "clip_seconds": args.clip_seconds}
    for size, rows in (("few", args.few), ("many", args.many)):
        # written by a process of its own: a child forked from this one would start with (and keep as its
        # ru_maxrss) whatever writing 20,000 rows left resident here
        folder = os.path.join(work, size)
        subprocess.run([sys.executable, os.path.abspath(__file__), "--write", folder, "--rows", str(rows),
                        "--clip-seconds", str(args.clip_seconds)], check=True, stdout=subprocess.DEVNULL)
        inputs = {"parquet": f"hf:{os.path.join(folder, 'rows.parquet')}",
                  "saved": f"hf:{os.path.join(folder, 'saved')}"}
        for kind, spec in inputs.items():
            out = os.path.join(work, f"out-{size}-{kind}")
            stage = ["tokenize", spec, "--model-path", model] if args.stage == "tokenize" else ["vad", spec]
            rss, wall, _ = peak_rss_of_run([*stage, "--out", out, "--text-column", "sentence", "--add", "lang=en",
                                            "--files-per-shard", str(rows), "--progress", "none"])
            result[f"{size}_{kind}_peak_rss_mb"] = round(rss, 1)
            result[f"{size}_{kind}_wall_seconds"] = round(wall, 1)
    for kind in ("parquet", "saved"):
        many, few = result[f"many_{kind}_peak_rss_mb"], result[f"few_{kind}_peak_rss_mb"]
        result[f"{kind}_many_over_few"] = round(many / few, 3)
    if args.json:
        print(json.dumps(result))
    else:
        for size in ("few", "many"):
            for kind in ("parquet", "saved"):
                print(f"{size:<5} {kind:<8} peak RSS {result[f'{size}_{kind}_peak_rss_mb']:8.1f} MB  "
                      f"({result[f'{size}_{kind}_wall_seconds']} s)")
        print(f"many / few: parquet {result['parquet_many_over_few']:.2f}, save_to_disk "
              f"{result['saved_many_over_few']:.2f}   (limit 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
