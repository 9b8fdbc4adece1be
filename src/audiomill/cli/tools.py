"""The tools around runs: ``codecs``, ``bench``, ``train-tokenizer``, ``push``, ``resynth`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from audiomill.cli.common import (Formatter, add_config, add_speed, declared_setting, non_negative, positive)
from audiomill.errors import EXIT_FATAL, EXIT_OK


def add_commands(commands) -> None:
    _add_codecs(commands)
    _add_bench(commands)
    _add_train_tokenizer(commands)
    _add_push(commands)
    _add_resynth(commands)
    _add_demo(commands)


def _add_codecs(commands) -> None:
    co = commands.add_parser("codecs", formatter_class=Formatter, help="the table of codecs",
                             description="List every codec: rates, codebooks, bitrate, batching safety, extra.")
    co.add_argument("--json", action="store_true", help="print JSON instead of a table")
    co.set_defaults(func=cmd_codecs)


def _add_bench(commands) -> None:
    be = commands.add_parser(
        "bench", formatter_class=Formatter, help="measure throughput against the ceilings and the naive loop",
        description=(
            "On one corpus and one set of weights, in one process, measure audio seconds per wall second of:\n"
            "the model ceiling (encode of pre-decoded, pre-batched windows), the decode ceiling (all decoders,\n"
            "no model), audiomill end to end, and the naive loop (one file at a time, decoded on the main\n"
            "thread, batch size one). The ceiling is min(model, decode) on a GPU and 1/(1/model + 1/decode)\n"
            "when both share the CPU. Without --corpus, real speech files (MP3 44.1 kHz stereo, FLAC 48 kHz,\n"
            "WAV 16 kHz) from 1 s to --longest-seconds are made first."
        ),
    )
    be.add_argument("--stage", default="tokenize", metavar="STAGE",
                    help="tokenize: a codec (the flags below); vad: the VAD ceiling (the backend on pre-decoded "
                         "audio, one thread), the decode ceiling and 'audiomill vad' end to end; transcribe: the "
                         "model ceiling (batches of pre-decoded whole files), the decode ceiling, 'audiomill "
                         "transcribe' end to end and the naive loop; prepare-tts: the indextts stage (codes, "
                         "conditioning, emotion; --model-path an IndexTTS2 release, else real sizes with random "
                         "weights, --tiny the test sizes); any other registered kind, or module:Class: the stage "
                         "alone on pre-decoded audio, the decode ceiling and end to end, its settings from --set")
    be.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="--stage KIND of your own: one of its settings (repeatable)")
    be.add_argument("--backend", default=None, choices=(*declared_setting("vad", "backend")[1],
                                                         *declared_setting("transcribe", "backend")[1]),
                    help="--stage vad: silero (default) or ten-vad; --stage transcribe: whisper (default; "
                         "--model-path, or --tiny) or pocketsphinx")
    be.add_argument("--grammar", default=None, metavar="FILE.jsgf",
                    help="--stage transcribe: pocketsphinx's grammar")
    be.add_argument("--max-tokens-per-second", type=positive(float),
                    default=declared_setting("transcribe", "max_tokens_per_second")[0], metavar="N",
                    help="--stage transcribe: whisper's limit of new tokens per second of a clip (+ 8)")
    be.add_argument("--codec", "-c", default=declared_setting("tokenize", "codec")[0],
                    help="codec name; see 'audiomill codecs'")
    be.add_argument("--model-path", default=None, metavar="DIR",
                    help="local folder with the codec's weights (default: full-size random weights)")
    be.add_argument("--tiny", action="store_true", help="use the codec's tiny random test configuration")
    be.add_argument("--corpus", nargs="+", default=[], metavar="INPUT",
                    help="your own shards, folders or manifests instead of the generated corpus")
    be.add_argument("--corpus-seconds", type=positive(float), default=1200.0, metavar="S",
                    help="length of the generated corpus")
    be.add_argument("--longest-seconds", type=positive(float), default=600.0, metavar="S",
                    help="the generated corpus has one file this long; the others are 1 to 60 s")
    be.add_argument("--device", default="auto", help="'auto' (the first GPU, else CPU), 'cpu' or a GPU index")
    be.add_argument("--decode-workers", type=non_negative(int), default=0, metavar="N",
                    help="decoding processes (0: as tokenize chooses)")
    be.add_argument("--batch-seconds", type=non_negative(float), default=0.0, metavar="S",
                    help="padded audio per encoder batch (0: as tokenize chooses)")
    be.add_argument("--chunk-seconds", type=non_negative(float), default=declared_setting("tokenize", "chunk_seconds")[0],
                    metavar="S",
                    help="window length for long files, as for tokenize")
    be.add_argument("--overlap-seconds", type=non_negative(float),
                    default=declared_setting("tokenize", "overlap_seconds")[0], metavar="S",
                    help="window overlap, as for tokenize")
    add_speed(be)
    be.add_argument("--batching", choices=declared_setting("tokenize", "batching")[1],
                    default=declared_setting("tokenize", "batching")[0],
                    help="as for tokenize; with padded, also the share of codes equal to exact batching's")
    be.add_argument("--agreement", action="store_true",
                    help="also report, for bf16, fp16, torch.compile (and TF32 on a GPU), and for --batching padded "
                         "where the codec is not 'masked', the share of codes identical to fp32 exact batches and "
                         "the model speed")
    be.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive loop (it is slow)")
    be.add_argument("--repeat", type=positive(int), default=3, metavar="N",
                    help="measure end to end and both ceilings N times, one after the other, and report the "
                         "medians (a run of a few seconds moves with the machine's load; --stage vad and codecs)")
    be.add_argument("--work-dir", default=None, metavar="DIR",
                    help="keep the corpus and outputs here (default: a temporary folder, removed after)")
    be.add_argument("--json", action="store_true",
                    help="print one JSON object (model_ceiling, decode_ceiling, ceiling, end_to_end, naive, "
                         "mean_batch_clips, padding_fraction, repair_fraction, peak_rss_mb, ...)")
    add_config(be)
    be.set_defaults(func=cmd_bench)


def _add_train_tokenizer(commands) -> None:
    tt = commands.add_parser(
        "train-tokenizer", formatter_class=Formatter, help="train a SentencePiece model on manifests' text",
        description="Train a SentencePiece model (BPE or unigram) on the 'text' of every line of JSONL manifests,\n"
                    "each cleaned and normalised as the text stage does (--language en also spells numbers),\n"
                    "so that the ids the text stage writes come from text the model has seen.",
    )
    tt.add_argument("manifests", nargs="+", metavar="MANIFEST", help="JSONL manifests with a 'text' field")
    tt.add_argument("--out", "-o", required=True, metavar="FILE.model", help="the model file to write")
    tt.add_argument("--vocab-size", type=positive(int), default=8000, metavar="N", help="pieces in the vocabulary")
    tt.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe", help="SentencePiece's model type")
    tt.add_argument("--language", default=None, metavar="CODE", help="normalise as this language (en: numbers)")
    tt.add_argument("--character-coverage", type=positive(float), default=1.0, metavar="SHARE",
                    help="the share of characters the model covers (1.0 for small alphabets such as Ge'ez)")
    tt.set_defaults(func=cmd_train_tokenizer)


def _add_push(commands) -> None:
    pu = commands.add_parser(
        "push", formatter_class=Formatter, help="upload a finished output folder as a Hugging Face dataset",
        description="Upload the complete shards of an output folder, with its dataset card (README.md, written\n"
                    "again first: one config per stage), to a Hugging Face dataset repository, with\n"
                    "huggingface_hub's resumable large-folder upload. Journals, temporary and state files, and\n"
                    "shards not complete are never uploaded. Log in first (huggingface-cli login or HF_TOKEN).",
    )
    pu.add_argument("out", metavar="OUT", help="an audiomill output folder")
    pu.add_argument("--repo", required=True, metavar="NAMESPACE/NAME", help="the dataset repository (created if missing)")
    pu.add_argument("--private", action="store_true", help="create the repository private")
    pu.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    pu.set_defaults(func=cmd_push)


def _add_resynth(commands) -> None:
    rs = commands.add_parser(
        "resynth", formatter_class=Formatter, help="decode tokens back to WAV files, to listen to them",
        description="Decode the token records of a JSONL file (or of every shard of a tokenize output folder)\n"
                    "back to audio with the codec that made them, one WAV file per record, named by key.\n"
                    "The codec, its options and weights come from the output folder's plan.",
    )
    rs.add_argument("tokens", metavar="TOKENS", help="a tokens .jsonl file, or a tokenize output folder")
    rs.add_argument("--wav-dir", required=True, metavar="DIR", help="folder for the WAV files (created)")
    rs.add_argument("--model-path", default=None, metavar="DIR",
                    help="the codec's weights (default: those the tokens were made with)")
    rs.add_argument("--limit", type=positive(int), default=None, metavar="N", help="stop after N files")
    rs.add_argument("--key", action="append", default=None, dest="keys", metavar="KEY",
                    help="only this record (repeatable)")
    rs.add_argument("--device", default="cpu", help="torch device for decoding, e.g. cuda:0")
    rs.set_defaults(func=cmd_resynth)


def _add_demo(commands) -> None:
    de = commands.add_parser(
        "demo", formatter_class=Formatter, help="make a small speech corpus and tokenize it",
        description="Make a few tar shards of speech (espeak-ng if installed) and tokenize them with SNAC.\n"
                    "Without reachable weights the demo uses randomly initialised ones, and says so.",
    )
    de.add_argument("--out", default="demo-out", help="folder for the corpus (shards/) and the tokens (tokens/)")
    de.add_argument("--codec", default=declared_setting("tokenize", "codec")[0], help="codec to tokenize with; see 'audiomill codecs'")
    de.add_argument("--model-path", default=None, metavar="DIR", help="local folder with the codec's weights")
    de.set_defaults(func=cmd_demo)


def cmd_codecs(args: argparse.Namespace) -> int:
    import json

    from audiomill.codecs import BATCHING, all_codecs

    infos = all_codecs()
    if args.json:
        print(json.dumps([{
            "name": i.name, "sample_rate": i.sample_rate, "frame_rates": list(i.frame_rates),
            "num_codebooks": i.num_codebooks, "cardinality": i.cardinality,
            "bits_per_second": round(i.bits_per_second, 1), "batching": i.batching, "padded_batching_exact": i.batching == "masked",
            "extra": i.extra,
            "hub_id": i.hub_id, "options": list(i.options), "description": i.description}
            for i in infos.values()], indent=1))
        return EXIT_OK
    print(f"{'codec':<16} {'rate':>6} {'frames/s':<28} {'books':>5} {'card':>6} {'bit/s':>7}  {'batching':<13} "
          f"{'padded exact':<12} {'extra':<23} options")
    for i in infos.values():
        rates = ", ".join(f"{r:.2f}" for r in i.frame_rates)
        print(f"{i.name:<16} {i.sample_rate:>6} {rates:<28} {i.num_codebooks:>5} {i.cardinality:>6} "
              f"{i.bits_per_second:>7.0f}  {i.batching:<13} {'yes' if i.batching == 'masked' else 'no':<12} {'audiomill[' + i.extra + ']':<23} "
              f"{', '.join(i.options) or '-'}")
    print("\nbatching (by default every code is as if each clip were encoded alone):")
    for method, meaning in BATCHING.items():
        print(f"  {method:<13} {meaning}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from audiomill.bench import BenchConfig, run_bench

    fields = BenchConfig.__dataclass_fields__
    if args.json:
        logging.getLogger().setLevel(logging.WARNING)
    return run_bench(BenchConfig(**{k: v for k, v in vars(args).items() if k in fields}))


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from audiomill.errors import UsageError
    from audiomill.text import manifest_texts, train_tokenizer

    for path in args.manifests:
        if not os.path.isfile(path):
            raise UsageError(f"no manifest {path}")
    if not args.out.endswith(".model"):
        raise UsageError(f"--out {args.out}: a SentencePiece model file ends in .model")
    counts: dict[str, int] = {}
    try:
        trained = train_tokenizer(manifest_texts(args.manifests, counts), args.out, args.vocab_size, args.model_type,
                                  args.character_coverage, args.language)
    except RuntimeError as exc:  # sentencepiece's own complaint, e.g. a vocabulary too large for the text
        raise UsageError(f"sentencepiece could not train: {str(exc).strip().splitlines()[-1]}") from None
    notes = [f"{trained['empty']} empty once cleaned"] if trained["empty"] else []
    if counts.get("bad"):
        notes.append(f"{counts['bad']} lines without text skipped")
    print(f"wrote {args.out}: {args.vocab_size} pieces ({args.model_type}) from {trained['lines']} lines"
          + "".join(f", {note}" for note in notes))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from audiomill.push import push

    files = push(args.out, args.repo, args.private, args.dry_run)
    if args.dry_run:
        for name in files:
            print(name)
        print(f"{len(files)} files would be uploaded to {args.repo} (dry run: nothing was)", file=sys.stderr)
    return EXIT_OK


def cmd_resynth(args: argparse.Namespace) -> int:
    from audiomill.resynth import resynth

    written = resynth(args.tokens, args.wav_dir, args.model_path, args.limit,
                      set(args.keys) if args.keys else None, args.device)
    return EXIT_OK if written else EXIT_FATAL


def cmd_demo(args: argparse.Namespace) -> int:
    from audiomill.demo import run_demo

    return run_demo(args.out, args.codec, args.model_path)
