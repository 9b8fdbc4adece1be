"""`audiomill bench --stage transcribe` for the figures of BENCHMARKS.md: Whisper at the size of OpenAI's
whisper-tiny (random weights, saved as a transformers checkpoint: what it costs, not what it says), the
same checkpoint converted for faster-whisper (CTranslate2), and PocketSphinx (its English model, in its
wheel), on one generated corpus of speech.

    python benchmarks/transcribe.py [--corpus-seconds 120] [--longest-seconds 20] [--device auto]
                                    [--max-tokens-per-second 4] [--json]

A random Whisper says as much as it is allowed to: --max-tokens-per-second (default 4, about what
real speech needs: ~2.5 words a second, ~1.3 tokens a word) bounds every clip's text, so its figures
are those of a model that talks that fast all the time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-seconds", default="120")
    parser.add_argument("--longest-seconds", default="20")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-tokens-per-second", default="4")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backends", default="whisper,faster-whisper,pocketsphinx")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from audiomill.asr import save_tiny_whisper

    with tempfile.TemporaryDirectory(prefix="audiomill-asr-bench-") as work:
        model = save_tiny_whisper(os.path.join(work, "whisper-tiny-size"), d_model=384, layers=4, heads=6,
                                  vocab_size=51865)
        converted = os.path.join(work, "whisper-tiny-size-ct2")
        if "faster-whisper" in args.backends:
            from ctranslate2.converters import TransformersConverter

            TransformersConverter(model, copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(converted)
        corpus = os.path.join(work, "bench")
        results = []
        for backend in args.backends.split(","):
            command = [sys.executable, "-m", "audiomill", "bench", "--stage", "transcribe", "--backend", backend,
                       "--corpus-seconds", args.corpus_seconds, "--longest-seconds", args.longest_seconds,
                       "--device", args.device, "--work-dir", corpus, "--json"]
            if backend in ("whisper", "faster-whisper"):
                command += ["--model-path", model if backend == "whisper" else converted, "--max-tokens-per-second",
                            args.max_tokens_per_second, "--precision", args.precision]
            elif args.device == "auto":
                command[command.index("--device") + 1] = "cpu"
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(results))
        return 0
    from audiomill.bench.transcribe import report as format_transcribe_report

    print("\n\n".join(format_transcribe_report(result) for result in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
