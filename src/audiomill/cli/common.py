"""What several commands share: the parser, the exit statuses, value parsers, the flag groups of the commands
that run stages, and the flags of a stage kind's declared settings (see :mod:`audiomill.stages.settings`)."""

from __future__ import annotations

import argparse
import logging

from audiomill.errors import EXIT_USAGE

log = logging.getLogger("audiomill")


EXIT_CODES = """exit status:
  0  every shard complete, every file tokenized (--executor slurm without --until-done: submitted)
  1  the run could not start or a worker crashed (one line says why)
  2  bad command line
  3  every shard complete, but some files failed (see <shard>.errors.jsonl)
  4  some shards are not complete (unreadable, or held by another run)"""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):  # no "(default: None)" after help that says what none means
        if (action.default is None or action.default is False or action.default == []
                or action.nargs == 0):  # a flag without a value: --no-naive is not "default: True"
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Bad command lines fail in one line, pointing at --help. The parser keeps each flag it is given, with
    its ``action=``, for :mod:`audiomill.cli.toml`; ``commands`` maps each command to its parser."""

    def __init__(self, *args, **kwargs):
        self.flags: list[tuple[argparse.Action, str | None]] = []
        self.commands: dict[str, Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        self.flags.append((action, kwargs.get("action")))
        return action

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def add_argument(*names, **flag):
            action = add(*names, **flag)
            self.flags.append((action, flag.get("action")))
            return action

        group.add_argument = add_argument
        return group

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def non_negative(kind):
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def constant(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def constants(pairs: list[str] | None) -> dict[str, str]:
    return {key.strip(): value for key, _, value in (pair.partition("=") for pair in pairs or ())}


def extension_list(text: str) -> list[str]:
    from audiomill.errors import UsageError
    from audiomill.sources.reader import audio_extensions

    try:
        return list(audio_extensions(text.split(",")) or ())
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def declared_setting(kind: str, name: str) -> tuple:
    """A kind's setting: its declared default and choices, for a command that offers it beside others."""
    from audiomill.stages import stage_class
    from audiomill.stages.settings import choices_of, default_of, field_of, settings_class

    spec, info = field_of(settings_class(stage_class(kind)), name)
    return default_of(spec), choices_of(info)


def add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files-per-shard", type=positive(int), default=1000, metavar="N",
                        help="files per shard for folders of audio and JSONL manifests (tar archives are one shard each)")
    parser.add_argument("--start", type=non_negative(int), default=None, metavar="N",
                        help="only shards whose name ends in a number >= N (e.g. 000120.tar)")
    parser.add_argument("--end", type=non_negative(int), default=None, metavar="N",
                        help="only shards whose name ends in a number <= N (inclusive)")
    parser.add_argument("--extensions", type=extension_list, default=None, metavar="LIST",
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
    parser.add_argument("--add", action="append", default=None, metavar="KEY=VALUE", type=constant,
                        help="a constant put into every record, e.g. --add lang=en (repeatable)")


def add_speed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=declared_setting("tokenize", "precision")[1],
                        default=declared_setting("tokenize", "precision")[0],
                        help="encoder arithmetic; anything but fp32 may change some codes: measure it with "
                             "'audiomill bench --agreement' first")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoder (slow start, then faster; check codes with bench --agreement)")


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="read settings from a TOML file whose keys are this command's long flags "
                             "(batch-seconds = 120, inputs = [\"shards/*.tar\"], codec-option = {bandwidth = 6}); "
                             "flags on the command line win")


def add_run_flags(parser: argparse.ArgumentParser, inputs: str, out_required: bool = True,
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
    parser.add_argument("--lines-per-file", type=non_negative(int), default=0, metavar="N",
                        help="write each shard's records in files of at most N records: <shard>-00000.<ext>, "
                             "<shard>-00001.<ext>, ... (and the list of them, <shard>.parts.json, last); 0: one file")
    parser.add_argument("--devices", default=devices,
                        help="'auto'/'all' (one worker per visible GPU, else one CPU worker), 'cpu', 'cpu:N' "
                             "(N CPU workers), or GPU indices such as '0,1,3'")
    parser.add_argument("--decode-workers", type=non_negative(int), default=0, metavar="N",
                        help="decoding processes per worker (0: a GPU worker's share of the cores minus one, at "
                             "most 8; one per two cores for a CPU worker)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="try the files recorded in *.errors.jsonl again")
    add_selection(parser)
    parser.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                        help="a live bar on a terminal, periodic log lines otherwise (auto), or as chosen")
    parser.add_argument("--log-interval", type=positive(float), default=30.0, metavar="S",
                        help="seconds between progress lines in log mode")
    parser.add_argument("--log-file", default=None, metavar="FILE", help="also write the log to FILE")


def add_stage_flags(parser: argparse.ArgumentParser, kind: str, title: str) -> None:
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
            group.add_argument(*names, action="append", default=None, type=constant, metavar=metavar, **common)
        else:
            group.add_argument(*names, default=default, type=setting_type(spec, info), metavar=metavar, **common)


def setting_type(spec, info):
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
    """A kind's settings from the parsed flags of :func:`add_stage_flags`."""
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


def add_tokenize_flags(tok: argparse.ArgumentParser, inputs: str, out_required: bool = True,
                        config: bool = True) -> None:
    add_run_flags(tok, inputs, out_required)
    add_stage_flags(tok, "tokenize", "codec")
    if config:
        add_config(tok)


def add_executors(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("executors")
    group.add_argument("--executor", choices=("local", "slurm", "ray"), default="local",
                       help="where to run: this machine's devices, a SLURM array (through submitit), or Ray")
    group.add_argument("--until-done", action="store_true",
                       help="slurm/ray: when a round ends with shards left (a task killed, a node lost), run "
                            "another, until all are complete or a round completes nothing")
    group.add_argument("--poll-seconds", type=positive(float), default=15.0, metavar="S",
                       help="slurm --until-done: seconds between looks at the queue")
    group.add_argument("--address", default=None,
                       help="ray: the cluster's address (default: start one on this machine)")
    group.add_argument("--ray-workers", type=non_negative(int), default=0, metavar="N",
                       help="ray: tasks at once (0: one per GPU of the cluster, else one per --devices CPU worker)")
    add_slurm(parser)


def add_slurm(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SLURM (--executor slurm, and slurm-script)")
    group.add_argument("--partition", default=None, help="partition to submit to (default: the cluster's)")
    group.add_argument("--time", default="2:00:00",
                       help="time limit of each array task (SLURM format: minutes, H:M:S, D-H:M:S); tasks requeue "
                            "themselves at it")
    group.add_argument("--gpus-per-node", type=non_negative(int), default=0, metavar="N",
                       help="GPUs per array task (one node each); every GPU gets a worker. 0: CPU nodes, "
                            "which run --devices")
    group.add_argument("--cpus-per-task", type=positive(int), default=None, metavar="N", help="CPUs per array task")
    group.add_argument("--mem", default=None, help="memory per node, e.g. 200G")
    group.add_argument("--nodes-max", type=positive(int), default=64, metavar="N",
                       help="at most this many array tasks (nodes) at once")
    group.add_argument("--account", default=None, help="account to charge")
    group.add_argument("--qos", default=None, help="quality of service")
    group.add_argument("--constraint", default=None, help="node features, e.g. a100|h100")
    group.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                       help="any other sbatch option, e.g. reservation=big or exclusive (repeatable)")
    group.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before each task, e.g. 'source ~/venv/bin/activate' (repeatable)")
    group.add_argument("--signal-seconds", type=positive(int), default=120, metavar="S",
                       help="seconds before the time limit at which a task is told to stop and requeue")


def config_from_args(args: argparse.Namespace, kind: str | None = None):
    """The run-wide flags as a RunConfig; with ``kind``, a run of one stage of it from its flags."""
    from audiomill.config import RunConfig

    fields = RunConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and k not in ("stages", "outputs")}
    values["add"] = constants(getattr(args, "add", None))
    cfg = RunConfig(**values)
    if kind is not None:
        cfg.stages = [{"group": "", "kind": kind, "settings": stage_settings(args, kind)}]
    return cfg


def slurm_from_args(args: argparse.Namespace):
    from audiomill.runner.slurm import SlurmOptions

    fields = SlurmOptions.__dataclass_fields__
    return SlurmOptions(**{k: v for k, v in vars(args).items() if k in fields})
