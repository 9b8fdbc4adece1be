"""The commands that run stages over inputs: ``tokenize``, ``vad``, ``transcribe``, a command for each stage
kind an installed package registers, ``run`` (a pipeline file) and ``prepare-tts``."""

from __future__ import annotations

import argparse
import os

from audiomill.cli.common import (EXIT_CODES, Formatter, add_config, add_executors, add_run_flags,
                                  add_stage_flags, add_tokenize_flags, config_from_args, log, slurm_from_args,
                                  stage_settings)


def add_commands(commands) -> None:
    _add_tokenize(commands)
    _add_vad(commands)
    _add_transcribe(commands)
    _add_plugin_commands(commands)
    _add_run(commands)
    _add_prepare_tts(commands)


def _add_tokenize(commands) -> None:
    tok = commands.add_parser(
        "tokenize", formatter_class=Formatter, help="encode audio into codec tokens, one file per shard",
        description=(
            "Encode every audio file of the inputs with a neural codec and write one file per input shard\n"
            "to --out (000001.tar -> 000001.jsonl, failed files in 000001.errors.jsonl). Run the same command\n"
            "again after a crash, a kill or a time limit: it finishes the work and changes nothing complete."
        ),
        epilog=EXIT_CODES,
    )
    add_tokenize_flags(tok, inputs="+")
    add_executors(tok)
    tok.set_defaults(func=cmd_stage, kind="tokenize")


def _add_vad(commands) -> None:
    vad = commands.add_parser(
        "vad", formatter_class=Formatter, help="speech segments and statistics of every file, and a manifest",
        description=(
            "Find the speech in every audio file of the inputs. Per input shard, one record per file in\n"
            "--out (its duration, speech_segments [[start, end], ...] and AMELA's statistics, in seconds);\n"
            "then, from every finished shard, <out>/vad.csv (AMELA's columns) and <out>/manifest.jsonl (a\n"
            "NeMo manifest, which 'audiomill tokenize' and 'run' take as input). VAD runs on CPU workers:\n"
            "--devices cpu:N runs N. Run the same command again after a kill: it resumes."
        ),
        epilog=EXIT_CODES,
    )
    add_run_flags(vad, inputs="+", devices="cpu")
    add_stage_flags(vad, "vad", "voice activity")
    add_config(vad)
    add_executors(vad)
    vad.set_defaults(func=cmd_stage, kind="vad")


def _add_transcribe(commands) -> None:
    asr = commands.add_parser(
        "transcribe", formatter_class=Formatter, help="transcripts of every file (or segment), and a manifest",
        description=(
            "Transcribe every audio file (or segment) of the inputs. Per input shard, one record per file in\n"
            "--out, with text, language, confidence, no_speech_prob and flags (signs of a hallucinated text:\n"
            "repetition, too long for its duration, no speech); then, from every finished shard,\n"
            "<out>/manifest.jsonl (NeMo's audio_filepath, duration, text, and offset for a segment), which\n"
            "every audiomill command takes as input. Give 'audiomill vad --segment' manifests to transcribe\n"
            "speech segments, or put a vad stage before transcribe in 'audiomill run'. Rows of an input\n"
            "manifest that already have a text are passed through. Run the same command again after a kill:\n"
            "it resumes."
        ),
        epilog=EXIT_CODES,
    )
    add_run_flags(asr, inputs="+")
    add_stage_flags(asr, "transcribe", "speech recognition")
    add_config(asr)
    add_executors(asr)
    asr.set_defaults(func=cmd_stage, kind="transcribe")


def _add_run(commands) -> None:
    pipe = commands.add_parser(
        "run", formatter_class=Formatter, help="run several stages over one decode, from a TOML file",
        description=(
            "Run the stages of a pipeline file over its inputs, decoding each file once (and resampling it\n"
            "once per rate the stages ask for). Each stage writes its own folder, <out>/<name>/. The file's\n"
            "top-level keys are this command's long flags (inputs, out, format, devices, ...; codec settings\n"
            "there are defaults for every tokenize stage); each [[stage]] table has a kind (tokenize, vad,\n"
            "transcribe, text, indextts, or module:Class for a stage of your own), a name, and its settings\n"
            "(a transcribe stage after a vad stage transcribes that stage's segments):\n\n"
            "  inputs = [\"/data/shards/*.tar\"]\n  out = \"/data/prep\"\n  format = \"parquet\"\n\n"
            "  [[stage]]\n  kind = \"tokenize\"\n  name = \"snac\"\n  codec = \"snac-24khz\"\n"
            "  model-path = \"/models/snac_24khz\"\n\n"
            "Flags after the file override its settings. Adding a stage to the file of a finished run and\n"
            "running again runs only the new stage."
        ),
        epilog=EXIT_CODES,
    )
    pipe.add_argument("pipeline", metavar="FILE.toml", help="the pipeline file")
    add_tokenize_flags(pipe, inputs="*", out_required=False, config=False)
    add_executors(pipe)
    pipe.set_defaults(func=cmd_run, pipeline_stages=[])


def _add_prepare_tts(commands) -> None:
    tts = commands.add_parser(
        "prepare-tts", formatter_class=Formatter, help="IndexTTS2 training data: text ids, codes, conditioning",
        description=(
            "Prepare an IndexTTS2 training set from utterances with text (a manifest's or a dataset's 'text',\n"
            "a tar sample's JSON): per utterance the normalised text as SentencePiece ids (--tokenizer), the\n"
            "MaskGCT semantic codes, the speaker conditioning [32, model_dim] and the emotion vector, from an\n"
            "IndexTTS2 release folder (--model-path: config.yaml, gpt.pth, wav2vec2bert_stats.pt,\n"
            "semantic_codec/model.safetensors, w2v-bert-2.0/). The records go to <out>/text and <out>/tts;\n"
            "when the run ends, IndexTTS2's layout is written at <out>: text_ids/, codes/, condition/,\n"
            "emo_vec/ (<id>.npy), train_manifest.jsonl, val_manifest.jsonl (by a hash of the id) and\n"
            "stats.json. Run the same command again after a kill: it resumes."
        ),
        epilog=EXIT_CODES,
    )
    add_run_flags(tts, inputs="+")
    add_stage_flags(tts, "text", "text ids")
    add_stage_flags(tts, "indextts", "codes and conditioning (IndexTTS2)")
    add_executors(tts)
    tts.set_defaults(func=cmd_prepare_tts)


def _add_plugin_commands(commands) -> None:
    """A command for each stage kind an installed package registers (entry points ``audiomill.stages``) with
    declared settings: ``audiomill KIND INPUT... --out DIR`` and the kind's flags, as ``audiomill vad``."""
    from audiomill.errors import UsageError
    from audiomill.stages import plugin_kinds, stage_class
    from audiomill.stages.settings import settings_class

    for kind in plugin_kinds():
        try:
            cls = stage_class(kind)
        except UsageError as exc:  # a broken plugin costs its own command only
            log.warning("%s", exc)
            continue
        if settings_class(cls) is None:
            continue
        doc = (cls.__doc__ or f"the {kind} stage").strip()
        sub = commands.add_parser(kind, formatter_class=Formatter, help=doc.splitlines()[0], description=doc,
                                  epilog=EXIT_CODES)
        add_run_flags(sub, inputs="+")
        add_stage_flags(sub, kind, f"{kind} stage")
        add_config(sub)
        add_executors(sub)
        sub.set_defaults(func=cmd_stage, kind=kind)


def cmd_stage(args: argparse.Namespace) -> int:
    """A run of one stage of ``args.kind`` (tokenize, vad, transcribe, or a kind a package registers)."""
    from audiomill.run import run

    return run(config_from_args(args, args.kind), slurm_from_args(args))


def cmd_run(args: argparse.Namespace) -> int:
    from audiomill.errors import UsageError
    from audiomill.run import run

    if not os.path.isfile(args.pipeline):
        raise UsageError(f"no pipeline file {args.pipeline}")
    from audiomill.stages.specs import pipeline_specs

    cfg = config_from_args(args)
    if not args.pipeline_stages:
        raise UsageError(f"{args.pipeline} has no [[stage]] tables: nothing to run")
    cfg.stages = pipeline_specs(args.pipeline_stages, {"tokenize": stage_settings(args, "tokenize")})
    missing = [name for name, value in (("out", cfg.out), ("inputs", cfg.inputs)) if not value]
    if missing:
        raise UsageError(f"{args.pipeline} sets no {' and no '.join(missing)}: add 'out = \"DIR\"' and "
                         f"'inputs = [...]' to it, or pass them as flags")
    return run(cfg, slurm_from_args(args))


def cmd_prepare_tts(args: argparse.Namespace) -> int:
    from audiomill.run import run

    cfg = config_from_args(args)
    cfg.stages = [{"group": "text", "kind": "text", "settings": stage_settings(args, "text")},
                  {"group": "tts", "kind": "indextts", "settings": stage_settings(args, "indextts")}]
    return run(cfg, slurm_from_args(args))
