"""The ``audiomill`` command line. Heavy modules are imported only by the command that needs them."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from audiomill import __version__
from audiomill.errors import EXIT_FATAL, EXIT_OK, EXIT_USAGE

log = logging.getLogger("audiomill")

EXIT_CODES = """exit status:
  0  every shard complete, every file tokenized (--executor slurm without --until-done: submitted)
  1  the run could not start or a worker crashed (one line says why)
  2  bad command line
  3  every shard complete, but some files failed (see <shard>.errors.jsonl)
  4  some shards are not complete (unreadable, or held by another run)"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):  # no "(default: None)" after help that says what none means
        if (action.default is None or action.default is False or action.default == []
                or isinstance(action, argparse._StoreFalseAction)):  # --no-naive is not "default: True"
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Bad command lines fail in one line, pointing at --help."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative(kind):
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files-per-shard", type=_positive(int), default=1000, metavar="N",
                        help="files per shard for folders of audio and JSONL manifests (tar archives are one shard each)")
    parser.add_argument("--start", type=_non_negative(int), default=None, metavar="N",
                        help="only shards whose name ends in a number >= N (e.g. 000120.tar)")
    parser.add_argument("--end", type=_non_negative(int), default=None, metavar="N",
                        help="only shards whose name ends in a number <= N (inclusive)")
    parser.add_argument("--extensions", type=_extension_list, default=None, metavar="LIST",
                        help="read only files (and tar members) with these extensions as audio, e.g. "
                             "flac,opus (default: every one libsndfile or FFmpeg reads: mp3, wav, flac, ogg, opus, "
                             "m4a, aac, webm, wma, aiff, caf, wv and more)")
    parser.add_argument("--audio-column", default="audio", metavar="NAME",
                        help="hf: inputs: the column of audio (datasets' Audio feature, read as bytes, or a path)")
    parser.add_argument("--text-column", default=None, metavar="NAME",
                        help="hf: inputs: the column written as the record's 'text'")
    parser.add_argument("--speaker-column", default=None, metavar="NAME",
                        help="hf: inputs: the column written as the record's 'speaker'")
    parser.add_argument("--id-column", default=None, metavar="NAME",
                        help="hf: inputs: the column that is each row's key (default: the row's index in its split)")
    parser.add_argument("--add", action="append", default=None, metavar="KEY=VALUE", type=_constant,
                        help="a constant put into every record, e.g. --add lang=en (repeatable)")


def _constant(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def _constants(pairs: list[str] | None) -> dict[str, str]:
    return {key.strip(): value for key, _, value in (pair.partition("=") for pair in pairs or ())}


def _extension_list(text: str) -> list[str]:
    from audiomill.errors import UsageError
    from audiomill.sources.reader import audio_extensions

    try:
        return list(audio_extensions(text.split(",")) or ())
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def _declared(kind: str, name: str) -> tuple:
    """A kind's setting: its declared default and choices, for a command that offers it beside others."""
    from audiomill.stages import stage_class
    from audiomill.stages.settings import choices_of, default_of, field_of, settings_class

    spec, info = field_of(settings_class(stage_class(kind)), name)
    return default_of(spec), choices_of(info)


def _add_speed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=_declared("tokenize", "precision")[1],
                        default=_declared("tokenize", "precision")[0],
                        help="encoder arithmetic; anything but fp32 may change some codes: measure it with "
                             "'audiomill bench --agreement' first")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoder (slow start, then faster; check codes with bench --agreement)")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="read settings from a TOML file whose keys are this command's long flags "
                             "(batch-seconds = 120, inputs = [\"shards/*.tar\"], codec-option = {bandwidth = 6}); "
                             "flags on the command line win")


def load_toml(path: str, flag: str = "--config") -> dict:
    import tomllib

    from audiomill.errors import UsageError

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{flag} {path}: not valid TOML: {exc}") from None


def config_defaults(sub: argparse.ArgumentParser, command: str, table: dict, source: str) -> None:
    """Make the settings of the TOML ``table`` the defaults of ``sub``'s flags, checked as flags are."""
    from audiomill.errors import UsageError

    actions: dict[str, argparse.Action] = {}
    for action in sub._actions:
        if action.dest in ("help", "config", "pipeline"):
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                actions[option[2:]] = action
        if not action.option_strings:
            actions[action.dest] = action
    defaults = {}
    for key, value in table.items():
        action = actions.get(key.replace("_", "-")) or actions.get(key)
        if action is None:
            raise UsageError(f"{source}: '{key}' is not a setting of 'audiomill {command}' (its settings are "
                             f"the long flags of 'audiomill {command} --help')")
        try:
            defaults[action.dest] = _setting(action, value)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise UsageError(f"{source}: {key} = {value!r}: {exc}") from None
        action.required = False
        if not action.option_strings and action.nargs == "+":
            action.nargs = "*"
    sub.set_defaults(**defaults)


def _setting(action: argparse.Action, value):
    """One TOML value as the flag's parsed value."""
    def one(item):
        if isinstance(item, (bool, dict, list)):
            raise TypeError("expected a string or a number")
        parsed = action.type(str(item)) if action.type else str(item)
        if action.choices is not None and parsed not in action.choices:
            raise ValueError(f"expected one of {', '.join(map(str, action.choices))}")
        return parsed

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        if isinstance(value, dict):  # codec-option = {bandwidth = 6}
            value = [f"{k}={v}" for k, v in value.items()]
        return [one(item) for item in (value if isinstance(value, list) else [value])]
    return one(value)


def _command_config(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Apply ``--config FILE`` of the command in ``argv`` before the command line is parsed."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    sub = _subparsers(parser).get(command or "")
    if sub is None:
        return
    if command == "run":  # audiomill run FILE.toml [flags]: the file's settings, its stages apart
        place = argv.index("run")
        if place + 1 < len(argv) and not argv[place + 1].startswith("-"):
            path = argv[place + 1]
            table = load_toml(path, "audiomill run")
            stages = table.pop("stage", [])
            if not isinstance(stages, list) or not all(isinstance(t, dict) for t in stages):
                from audiomill.errors import UsageError

                raise UsageError(f"{path}: 'stage' must be [[stage]] tables")
            config_defaults(sub, command, table, path)
            sub.set_defaults(pipeline_stages=stages)
        return
    path = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is not None and any(a.dest == "config" for a in sub._actions):
        config_defaults(sub, command, load_toml(path), f"--config {path}")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _add_run_flags(parser: argparse.ArgumentParser, inputs: str, out_required: bool = True,
                   devices: str = "auto") -> None:
    """The flags of every command that runs stages over inputs (tokenize, vad, run)."""
    parser.add_argument("inputs", nargs=inputs, metavar="INPUT",
                        help="tar shards (WebDataset layout), folders of audio or of tar shards, JSONL manifests "
                             "(audiomill vad's among them), globs, or Hugging Face datasets: hf:FOLDER (save_to_disk; "
                             "hf:FOLDER:SPLIT for one split), hf:FILE.parquet, hf:FILE.arrow, "
                             "hf:HUB_ID[:CONFIG[:SPLIT]] (from the local cache)")
    parser.add_argument("--out", "-o", required=out_required, help="output folder (created if missing)")
    from audiomill.sinks import format_names

    parser.add_argument("--format", default="jsonl", choices=format_names(),
                        help="output format of each shard: JSON Lines, gzipped JSON Lines, Parquet (zstd; needs "
                             "pyarrow), wds (a WebDataset tar: <key>.codes.npy + <key>.json a sample), or npy "
                             "(<shard>/<key>.npy a record, and the records in <shard>.npy.jsonl). Error records "
                             "are JSON Lines in every format")
    parser.add_argument("--lines-per-file", type=_non_negative(int), default=0, metavar="N",
                        help="write each shard's records in files of at most N records: <shard>-00000.<ext>, "
                             "<shard>-00001.<ext>, ... (and the list of them, <shard>.parts.json, last); 0: one file")
    parser.add_argument("--devices", default=devices,
                        help="'auto'/'all' (one worker per visible GPU, else one CPU worker), 'cpu', 'cpu:N' "
                             "(N CPU workers), or GPU indices such as '0,1,3'")
    parser.add_argument("--decode-workers", type=_non_negative(int), default=0, metavar="N",
                        help="decoding processes per worker (0: a GPU worker's share of the cores minus one, at "
                             "most 8; one per two cores for a CPU worker)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="try the files recorded in *.errors.jsonl again")
    _add_selection(parser)
    parser.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                        help="a live bar on a terminal, periodic log lines otherwise (auto), or as chosen")
    parser.add_argument("--log-interval", type=_positive(float), default=30.0, metavar="S",
                        help="seconds between progress lines in log mode")
    parser.add_argument("--log-file", default=None, metavar="FILE", help="also write the log to FILE")


def _add_stage_flags(parser: argparse.ArgumentParser, kind: str, title: str) -> None:
    """The flags of a stage kind's settings, from its declaration (see audiomill.stages.settings); each
    parsed into ``<kind>:<setting>``."""
    from audiomill.stages import stage_class
    from audiomill.stages.settings import choices_of, declared, default_of, flag_of, settings_class

    group = parser.add_argument_group(title)
    for spec, info in declared(settings_class(stage_class(kind))):
        if info.hidden:
            continue
        names = [flag_of(spec, info), *([info.short] if info.short else [])]
        default = default_of(spec)
        choices = choices_of(info)
        metavar = info.metavar or ("{" + ",".join(choices) + "}" if choices else spec.name.upper())
        common = {"dest": f"{kind}:{spec.name}", "help": info.help}
        if info.required:
            common["required"] = True
        if isinstance(default, bool):
            group.add_argument(*names, action="store_true", **common)
        elif info.repeat:
            group.add_argument(*names, action="append", default=None, type=_constant, metavar=metavar, **common)
        else:
            group.add_argument(*names, default=default, type=_setting_type(spec, info), metavar=metavar, **common)


def _setting_type(spec, info):
    from audiomill.errors import UsageError
    from audiomill.stages.settings import value_of

    def parse(text: str):
        try:
            return value_of(spec, info, text, "")
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = spec.name  # argparse names it in its message
    return parse


def stage_settings(args: argparse.Namespace, kind: str) -> dict:
    """A kind's settings from the parsed flags of :func:`_add_stage_flags`."""
    from audiomill.stages import stage_class
    from audiomill.stages.settings import declared, default_of, settings_class

    settings = {}
    for spec, info in declared(settings_class(stage_class(kind))):
        if info.hidden:
            continue
        value = getattr(args, f"{kind}:{spec.name}")
        if info.repeat:
            value = info.parse(value) if value and info.parse else (value or default_of(spec))
        settings[spec.name] = value
    return settings


def _add_tokenize_flags(tok: argparse.ArgumentParser, inputs: str, out_required: bool = True,
                        config: bool = True) -> None:
    _add_run_flags(tok, inputs, out_required)
    _add_stage_flags(tok, "tokenize", "codec")
    if config:
        _add_config(tok)


def _add_slurm(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SLURM (--executor slurm, and slurm-script)")
    group.add_argument("--partition", default=None, help="partition to submit to (default: the cluster's)")
    group.add_argument("--time", default="2:00:00",
                       help="time limit of each array task (SLURM format: minutes, H:M:S, D-H:M:S); tasks requeue "
                            "themselves at it")
    group.add_argument("--gpus-per-node", type=_non_negative(int), default=0, metavar="N",
                       help="GPUs per array task (one node each); every GPU gets a worker. 0: CPU nodes, "
                            "which run --devices")
    group.add_argument("--cpus-per-task", type=_positive(int), default=None, metavar="N", help="CPUs per array task")
    group.add_argument("--mem", default=None, help="memory per node, e.g. 200G")
    group.add_argument("--nodes-max", type=_positive(int), default=64, metavar="N",
                       help="at most this many array tasks (nodes) at once")
    group.add_argument("--account", default=None, help="account to charge")
    group.add_argument("--qos", default=None, help="quality of service")
    group.add_argument("--constraint", default=None, help="node features, e.g. a100|h100")
    group.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                       help="any other sbatch option, e.g. reservation=big or exclusive (repeatable)")
    group.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before each task, e.g. 'source ~/venv/bin/activate' (repeatable)")
    group.add_argument("--signal-seconds", type=_positive(int), default=120, metavar="S",
                       help="seconds before the time limit at which a task is told to stop and requeue")


def _add_executors(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("executors")
    group.add_argument("--executor", choices=("local", "slurm", "ray"), default="local",
                       help="where to run: this machine's devices, a SLURM array (through submitit), or Ray")
    group.add_argument("--until-done", action="store_true",
                       help="slurm/ray: when a round ends with shards left (a task killed, a node lost), run "
                            "another, until all are complete or a round completes nothing")
    group.add_argument("--poll-seconds", type=_positive(float), default=15.0, metavar="S",
                       help="slurm --until-done: seconds between looks at the queue")
    group.add_argument("--address", default=None,
                       help="ray: the cluster's address (default: start one on this machine)")
    group.add_argument("--ray-workers", type=_non_negative(int), default=0, metavar="N",
                       help="ray: tasks at once (0: one per GPU of the cluster, else one per --devices CPU worker)")
    _add_slurm(parser)


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
        sub = commands.add_parser(kind, formatter_class=_Formatter, help=doc.splitlines()[0], description=doc,
                                  epilog=EXIT_CODES)
        _add_run_flags(sub, inputs="+")
        _add_stage_flags(sub, kind, f"{kind} stage")
        _add_config(sub)
        _add_executors(sub)
        sub.set_defaults(func=cmd_stage, kind=kind)


def cmd_stage(args: argparse.Namespace) -> int:
    """A run of one stage of ``args.kind`` (tokenize, vad, transcribe, or a kind a package registers)."""
    from audiomill.run import run

    return run(_config_from_args(args, args.kind), _slurm_from_args(args))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="audiomill",
        description="Turn large audio corpora into training-ready data: codec tokens, speech segments, transcripts "
                    "and TTS training sets.",
        formatter_class=_Formatter,
        epilog="Run 'audiomill COMMAND --help' for the flags of each command.",
    )
    parser.add_argument("--version", action="version", version=f"audiomill {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    tok = commands.add_parser(
        "tokenize", formatter_class=_Formatter, help="encode audio into codec tokens, one file per shard",
        description=(
            "Encode every audio file of the inputs with a neural codec and write one file per input shard\n"
            "to --out (000001.tar -> 000001.jsonl, failed files in 000001.errors.jsonl). Run the same command\n"
            "again after a crash, a kill or a time limit: it finishes the work and changes nothing complete."
        ),
        epilog=EXIT_CODES,
    )
    _add_tokenize_flags(tok, inputs="+")
    _add_executors(tok)
    tok.set_defaults(func=cmd_stage, kind="tokenize")

    vad = commands.add_parser(
        "vad", formatter_class=_Formatter, help="speech segments and statistics of every file, and a manifest",
        description=(
            "Find the speech in every audio file of the inputs. Per input shard, one record per file in\n"
            "--out (its duration, speech_segments [[start, end], ...] and AMELA's statistics, in seconds);\n"
            "then, from every finished shard, <out>/vad.csv (AMELA's columns) and <out>/manifest.jsonl (a\n"
            "NeMo manifest, which 'audiomill tokenize' and 'run' take as input). VAD runs on CPU workers:\n"
            "--devices cpu:N runs N. Run the same command again after a kill: it resumes."
        ),
        epilog=EXIT_CODES,
    )
    _add_run_flags(vad, inputs="+", devices="cpu")
    _add_stage_flags(vad, "vad", "voice activity")
    _add_config(vad)
    _add_executors(vad)
    vad.set_defaults(func=cmd_stage, kind="vad")

    asr = commands.add_parser(
        "transcribe", formatter_class=_Formatter, help="transcripts of every file (or segment), and a manifest",
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
    _add_run_flags(asr, inputs="+")
    _add_stage_flags(asr, "transcribe", "speech recognition")
    _add_config(asr)
    _add_executors(asr)
    asr.set_defaults(func=cmd_stage, kind="transcribe")

    _add_plugin_commands(commands)

    pipe = commands.add_parser(
        "run", formatter_class=_Formatter, help="run several stages over one decode, from a TOML file",
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
    _add_tokenize_flags(pipe, inputs="*", out_required=False, config=False)
    _add_executors(pipe)
    pipe.set_defaults(func=cmd_run, pipeline_stages=[])

    ss = commands.add_parser(
        "slurm-script", formatter_class=_Formatter, help="write an sbatch array script for a plan",
        description=(
            "Write a ready SLURM array script for the shards of a plan that are not complete, for clusters\n"
            "where jobs may only be submitted with sbatch. With INPUTs, the plan is made (or extended) first,\n"
            "exactly as 'tokenize' would; without, the plan already in --out is used. Each task requeues\n"
            "itself at the time limit; submitting the script again runs whatever is still left."
        ),
    )
    _add_tokenize_flags(ss, inputs="*")
    ss.add_argument("--script", default=None, metavar="FILE", help="write the script here (default: stdout)")
    _add_slurm(ss)
    ss.set_defaults(func=cmd_slurm_script)

    stask = commands.add_parser("slurm-task", formatter_class=_Formatter,
                                description="Run one array task of the plan in OUT (what slurm-script's "
                                            "scripts call).")
    stask.add_argument("out", metavar="OUT")
    stask.add_argument("--task", type=_non_negative(int), required=True, metavar="I")
    stask.add_argument("--tasks", type=_positive(int), required=True, metavar="N")
    stask.add_argument("--devices", default=None)
    stask.set_defaults(func=cmd_slurm_task)

    st = commands.add_parser(
        "status", formatter_class=_Formatter, help="what is complete, running, partial, failed or left",
        description="Show the state of every shard of an output folder: complete, damaged (and why), running\n"
                    "(and who holds it), partial (with counts), failed (and why) or not started, and the totals.",
    )
    st.add_argument("out", metavar="OUT", help="the output folder of a tokenize run")
    st.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="check against these inputs instead of the shards of the run's plan")
    _add_selection(st)
    st.set_defaults(files_per_shard=None)  # the plan's
    st.add_argument("--check-validity", action="store_true",
                    help="parse every line and check that every key is unique within its shard")
    st.add_argument("--remaining", metavar="FILE", default=None,
                    help="write the inputs of the shards that are not complete to FILE, one a line")
    st.add_argument("--all", action="store_true", help="list complete shards too, not only the others")
    st.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    st.set_defaults(func=cmd_status)

    sh = commands.add_parser("shards", formatter_class=_Formatter, help="list the shards of some inputs",
                             description="List the shards that 'tokenize' would make of the inputs.")
    sh.add_argument("inputs", nargs="+", metavar="INPUT", help="as for tokenize")
    _add_selection(sh)
    sh.set_defaults(func=cmd_shards)

    co = commands.add_parser("codecs", formatter_class=_Formatter, help="the table of codecs",
                             description="List every codec: rates, codebooks, bitrate, batching safety, extra.")
    co.add_argument("--json", action="store_true", help="print JSON instead of a table")
    co.set_defaults(func=cmd_codecs)

    be = commands.add_parser(
        "bench", formatter_class=_Formatter, help="measure throughput against the ceilings and the naive loop",
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
    be.add_argument("--backend", default=None, choices=(*_declared("vad", "backend")[1],
                                                         *_declared("transcribe", "backend")[1]),
                    help="--stage vad: silero (default) or ten-vad; --stage transcribe: whisper (default; "
                         "--model-path, or --tiny) or pocketsphinx")
    be.add_argument("--grammar", default=None, metavar="FILE.jsgf",
                    help="--stage transcribe: pocketsphinx's grammar")
    be.add_argument("--max-tokens-per-second", type=_positive(float),
                    default=_declared("transcribe", "max_tokens_per_second")[0], metavar="N",
                    help="--stage transcribe: whisper's limit of new tokens per second of a clip (+ 8)")
    be.add_argument("--codec", "-c", default=_declared("tokenize", "codec")[0],
                    help="codec name; see 'audiomill codecs'")
    be.add_argument("--model-path", default=None, metavar="DIR",
                    help="local folder with the codec's weights (default: full-size random weights)")
    be.add_argument("--tiny", action="store_true", help="use the codec's tiny random test configuration")
    be.add_argument("--corpus", nargs="+", default=[], metavar="INPUT",
                    help="your own shards, folders or manifests instead of the generated corpus")
    be.add_argument("--corpus-seconds", type=_positive(float), default=1200.0, metavar="S",
                    help="length of the generated corpus")
    be.add_argument("--longest-seconds", type=_positive(float), default=600.0, metavar="S",
                    help="the generated corpus has one file this long; the others are 1 to 60 s")
    be.add_argument("--device", default="auto", help="'auto' (the first GPU, else CPU), 'cpu' or a GPU index")
    be.add_argument("--decode-workers", type=_non_negative(int), default=0, metavar="N",
                    help="decoding processes (0: as tokenize chooses)")
    be.add_argument("--batch-seconds", type=_non_negative(float), default=0.0, metavar="S",
                    help="padded audio per encoder batch (0: as tokenize chooses)")
    be.add_argument("--chunk-seconds", type=_non_negative(float), default=_declared("tokenize", "chunk_seconds")[0],
                    metavar="S",
                    help="window length for long files, as for tokenize")
    be.add_argument("--overlap-seconds", type=_non_negative(float),
                    default=_declared("tokenize", "overlap_seconds")[0], metavar="S",
                    help="window overlap, as for tokenize")
    _add_speed(be)
    be.add_argument("--batching", choices=_declared("tokenize", "batching")[1],
                    default=_declared("tokenize", "batching")[0],
                    help="as for tokenize; with padded, also the share of codes equal to exact batching's")
    be.add_argument("--agreement", action="store_true",
                    help="also report, for bf16, fp16, torch.compile (and TF32 on a GPU), and for --batching padded "
                         "where the codec is not 'masked', the share of codes identical to fp32 exact batches and "
                         "the model speed")
    be.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive loop (it is slow)")
    be.add_argument("--repeat", type=_positive(int), default=3, metavar="N",
                    help="measure end to end and both ceilings N times, one after the other, and report the "
                         "medians (a run of a few seconds moves with the machine's load; --stage vad and codecs)")
    be.add_argument("--work-dir", default=None, metavar="DIR",
                    help="keep the corpus and outputs here (default: a temporary folder, removed after)")
    be.add_argument("--json", action="store_true",
                    help="print one JSON object (model_ceiling, decode_ceiling, ceiling, end_to_end, naive, "
                         "mean_batch_clips, padding_fraction, repair_fraction, peak_rss_mb, ...)")
    _add_config(be)
    be.set_defaults(func=cmd_bench)

    tts = commands.add_parser(
        "prepare-tts", formatter_class=_Formatter, help="IndexTTS2 training data: text ids, codes, conditioning",
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
    _add_run_flags(tts, inputs="+")
    _add_stage_flags(tts, "text", "text ids")
    _add_stage_flags(tts, "indextts", "codes and conditioning (IndexTTS2)")
    _add_executors(tts)
    tts.set_defaults(func=cmd_prepare_tts)

    tt = commands.add_parser(
        "train-tokenizer", formatter_class=_Formatter, help="train a SentencePiece model on manifests' text",
        description="Train a SentencePiece model (BPE or unigram) on the 'text' of every line of JSONL manifests,\n"
                    "each cleaned and normalised as the text stage does (--language en also spells numbers),\n"
                    "so that the ids the text stage writes come from text the model has seen.",
    )
    tt.add_argument("manifests", nargs="+", metavar="MANIFEST", help="JSONL manifests with a 'text' field")
    tt.add_argument("--out", "-o", required=True, metavar="FILE.model", help="the model file to write")
    tt.add_argument("--vocab-size", type=_positive(int), default=8000, metavar="N", help="pieces in the vocabulary")
    tt.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe", help="SentencePiece's model type")
    tt.add_argument("--language", default=None, metavar="CODE", help="normalise as this language (en: numbers)")
    tt.add_argument("--character-coverage", type=_positive(float), default=1.0, metavar="SHARE",
                    help="the share of characters the model covers (1.0 for small alphabets such as Ge'ez)")
    tt.set_defaults(func=cmd_train_tokenizer)

    pu = commands.add_parser(
        "push", formatter_class=_Formatter, help="upload a finished output folder as a Hugging Face dataset",
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

    rs = commands.add_parser(
        "resynth", formatter_class=_Formatter, help="decode tokens back to WAV files, to listen to them",
        description="Decode the token records of a JSONL file (or of every shard of a tokenize output folder)\n"
                    "back to audio with the codec that made them, one WAV file per record, named by key.\n"
                    "The codec, its options and weights come from the output folder's plan.",
    )
    rs.add_argument("tokens", metavar="TOKENS", help="a tokens .jsonl file, or a tokenize output folder")
    rs.add_argument("--wav-dir", required=True, metavar="DIR", help="folder for the WAV files (created)")
    rs.add_argument("--model-path", default=None, metavar="DIR",
                    help="the codec's weights (default: those the tokens were made with)")
    rs.add_argument("--limit", type=_positive(int), default=None, metavar="N", help="stop after N files")
    rs.add_argument("--key", action="append", default=None, dest="keys", metavar="KEY",
                    help="only this record (repeatable)")
    rs.add_argument("--device", default="cpu", help="torch device for decoding, e.g. cuda:0")
    rs.set_defaults(func=cmd_resynth)

    de = commands.add_parser(
        "demo", formatter_class=_Formatter, help="make a small speech corpus and tokenize it",
        description="Make a few tar shards of speech (espeak-ng if installed) and tokenize them with SNAC.\n"
                    "Without reachable weights the demo uses randomly initialised ones, and says so.",
    )
    de.add_argument("--out", default="demo-out", help="folder for the corpus (shards/) and the tokens (tokens/)")
    de.add_argument("--codec", default=_declared("tokenize", "codec")[0], help="codec to tokenize with; see 'audiomill codecs'")
    de.add_argument("--model-path", default=None, metavar="DIR", help="local folder with the codec's weights")
    de.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from audiomill.errors import UsageError

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        _command_config(parser, argv)
    except UsageError as exc:
        print(f"audiomill: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"audiomill {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("audiomill: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _config_from_args(args: argparse.Namespace, kind: str | None = None):
    """The run-wide flags as a RunConfig; with ``kind``, a run of one stage of it from its flags."""
    from audiomill.config import RunConfig

    fields = RunConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and k not in ("stages", "outputs")}
    values["add"] = _constants(getattr(args, "add", None))
    cfg = RunConfig(**values)
    if kind is not None:
        cfg.stages = [{"group": "", "kind": kind, "settings": stage_settings(args, kind)}]
    return cfg


def _slurm_from_args(args: argparse.Namespace):
    from audiomill.runner.slurm import SlurmOptions

    fields = SlurmOptions.__dataclass_fields__
    return SlurmOptions(**{k: v for k, v in vars(args).items() if k in fields})


def cmd_prepare_tts(args: argparse.Namespace) -> int:
    from audiomill.run import run

    cfg = _config_from_args(args)
    cfg.stages = [{"group": "text", "kind": "text", "settings": stage_settings(args, "text")},
                  {"group": "tts", "kind": "indextts", "settings": stage_settings(args, "indextts")}]
    return run(cfg, _slurm_from_args(args))


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


def cmd_run(args: argparse.Namespace) -> int:
    from audiomill.errors import UsageError
    from audiomill.run import run

    if not os.path.isfile(args.pipeline):
        raise UsageError(f"no pipeline file {args.pipeline}")
    from audiomill.stages.specs import pipeline_specs

    cfg = _config_from_args(args)
    if not args.pipeline_stages:
        raise UsageError(f"{args.pipeline} has no [[stage]] tables: nothing to run")
    cfg.stages = pipeline_specs(args.pipeline_stages, {"tokenize": stage_settings(args, "tokenize")})
    missing = [name for name, value in (("out", cfg.out), ("inputs", cfg.inputs)) if not value]
    if missing:
        raise UsageError(f"{args.pipeline} sets no {' and no '.join(missing)}: add 'out = \"DIR\"' and "
                         f"'inputs = [...]' to it, or pass them as flags")
    return run(cfg, _slurm_from_args(args))


def cmd_slurm_script(args: argparse.Namespace) -> int:
    from audiomill.errors import UsageError
    from audiomill.runner.slurm import sbatch_script, task_devices
    from audiomill.runner.state import OutputFolder
    from audiomill.runner.tasks import left_to_do
    from audiomill.runner.plan import prepare

    cfg = _config_from_args(args, "tokenize")
    cfg.executor = "slurm"
    opts = _slurm_from_args(args)
    if cfg.inputs:
        prepare(cfg)
    elif not OutputFolder(cfg.out).exists():
        raise UsageError(f"{cfg.out} holds no plan yet: pass the inputs and tokenize flags to make one")
    folder = OutputFolder(os.path.abspath(cfg.out))
    left = len(left_to_do(folder))
    if not left:
        raise UsageError(f"every shard of {cfg.out} is complete: nothing to submit")
    devices = task_devices(opts) or (cfg.devices if cfg.inputs else folder.read_plan()["config"].get("devices"))
    script = sbatch_script(folder.out, opts, min(opts.nodes_max, left), devices)
    if args.script in (None, "-"):
        sys.stdout.write(script)
    else:
        with open(args.script, "w", encoding="utf-8") as handle:
            handle.write(script)
        os.chmod(args.script, 0o755)
        print(f"wrote {args.script}: {min(opts.nodes_max, left)} tasks over {left} shards left; "
              f"submit it with: sbatch {args.script}", file=sys.stderr)
    return EXIT_OK


def cmd_slurm_task(args: argparse.Namespace) -> int:
    from audiomill.runner.slurm import slurm_task

    state = slurm_task(args.out, args.task, args.tasks, args.devices)
    return EXIT_FATAL if state == "crashed" else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from audiomill.errors import UsageError
    from audiomill.runner.state import OutputFolder
    from audiomill.sources.discover import discover_shards
    from audiomill.status import collect, task_states, totals

    folder = OutputFolder(args.out)
    if args.inputs:  # sliced as the plan slices them, unless told otherwise
        per_shard = args.files_per_shard or (folder.read_plan()["config"].get("files_per_shard", 1000)
                                             if folder.exists() else 1000)
        config = folder.read_plan()["config"] if folder.exists() else {}
        extensions = args.extensions or config.get("extensions")
        shards = discover_shards(args.inputs, per_shard, args.start, args.end, extensions=extensions,
                                 columns=_columns(args, config))
    elif folder.exists():
        shards = folder.shards()
    else:
        raise UsageError(f"{args.out} holds no audiomill run (no _audiomill/plan.json); pass the inputs too")
    states = collect(folder, shards, args.check_validity)
    summary = totals(states)
    tasks = task_states(folder)
    if args.remaining:
        paths: list[str] = []
        for s in states:
            if s.state != "complete" and s.shard.path not in paths:
                paths.append(s.shard.path)
        with open(args.remaining, "w", encoding="utf-8") as handle:
            handle.writelines(p + "\n" for p in paths)
    if args.json:
        print(json.dumps({"totals": summary, "shards": [
            {"shard": s.shard.name, "stage": s.group, "input": s.shard.path, "state": s.state, "files": s.files,
             "errors": s.errors,
             "audio_seconds": s.audio_seconds, "detail": s.detail, "problems": s.problems} for s in states],
            "tasks": tasks}))
    else:
        rows = [s for s in states if args.all or s.state != "complete" or s.problems]
        staged = any(s.group for s in states)
        if rows:
            print(("stage        " if staged else "") +
                  f"{'shard':<24} {'state':<12} {'files':>8} {'errors':>7} {'audio h':>8}  detail")
            for s in rows:
                detail = s.detail or ""
                print((f"{s.group:<12} " if staged else "") + f"{s.shard.name:<24} {s.state:<12} {s.files:>8} "
                      f"{s.errors:>7} {s.audio_seconds / 3600:>8.3f}  {detail}")
                for problem in s.problems[:20]:
                    print(f"    problem: {problem}")
        parts = [f"{summary.get(k, 0)} {k.replace('_', ' ')}" for k in
                 ("complete", "running", "partial", "failed", "not_started")]
        if summary.get("damaged"):
            parts.insert(1, f"{summary['damaged']} damaged")
        print(f"{summary['shards']} shards: {', '.join(parts)}; {summary['files']} files, {summary['errors']} errors, "
              f"{summary['audio_hours']:.3f} h audio" + (f"; {summary['problems']} problems" if args.check_validity
                                                          else ""))
        _print_tasks(tasks, args.all)
        if args.remaining:
            print(f"remaining inputs written to {args.remaining}")
    return EXIT_FATAL if summary["problems"] else EXIT_OK


def _columns(args: argparse.Namespace, config: dict):
    """The hf: column flags, else the plan's."""
    from audiomill.sources.hf import Columns

    return Columns(*(getattr(args, f"{role}_column", None) or config.get(f"{role}_column")
                     for role in ("audio", "text", "speaker", "id")))


def _print_tasks(tasks: list[dict], show_all: bool) -> None:
    """Cluster tasks: counts by state, then the running, lost and crashed ones (all with --all)."""
    import time

    if not tasks:
        return
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    print("tasks: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    for task in tasks:
        if not show_all and task["state"] not in ("running", "lost", "crashed"):
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(task.get("started", 0)))
        print(f"  {task['executor']} {task['job']:<14} {task['state']:<9} attempt {task.get('attempt', 0)} on "
              f"{task.get('host', '?')} since {since}; log {task.get('log', '?')}")
        if task["state"] == "crashed" and task.get("error"):
            lines = [line for line in task["error"].strip().splitlines() if line.strip()]
            print(f"    error: {lines[0]}")
            if len(lines) > 1:
                print(f"    last traceback line: {lines[-1].strip()}")
        elif task["state"] == "lost":
            print("    its process is gone without a word (killed outright?): its shards are free again")


def cmd_shards(args: argparse.Namespace) -> int:
    from audiomill.sources.discover import discover_shards

    for shard in discover_shards(args.inputs, args.files_per_shard, args.start, args.end, extensions=args.extensions,
                                 columns=_columns(args, {})):
        extent = "" if shard.count is None else f"\t[{shard.start}, {shard.start + shard.count})"
        print(f"{shard.name}\t{shard.kind}\t{shard.path}{extent}")
    return EXIT_OK


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


def cmd_bench(args: argparse.Namespace) -> int:
    from audiomill.bench import BenchConfig, run_bench

    fields = BenchConfig.__dataclass_fields__
    if args.json:
        logging.getLogger().setLevel(logging.WARNING)
    return run_bench(BenchConfig(**{k: v for k, v in vars(args).items() if k in fields}))


def cmd_demo(args: argparse.Namespace) -> int:
    from audiomill.demo import run_demo

    return run_demo(args.out, args.codec, args.model_path)


