"""The ``audiomill`` command line: one module per group of commands, each adding its commands to the parser.

- :mod:`.run` the commands that run stages (``tokenize``, ``vad``, ``transcribe``, ``run``, ``prepare-tts``, and a
  command per stage kind a package registers);
- :mod:`.status` ``status`` and ``shards``; :mod:`.cluster` ``slurm-script`` and ``slurm-task``;
- :mod:`.tools` ``codecs``, ``bench``, ``train-tokenizer``, ``push``, ``resynth`` and ``demo``;
- :mod:`.common` the parser, the flag groups several commands share, and the flags of a kind's declared
  settings; :mod:`.toml` TOML files as the defaults of a command's flags.

Heavy modules are imported only by the command that needs them.
"""

from __future__ import annotations

import logging
import sys

from audiomill import __version__
from audiomill.cli import cluster, run, status, tools
from audiomill.cli.common import Formatter, Parser
from audiomill.cli.toml import command_config
from audiomill.errors import EXIT_FATAL, EXIT_USAGE

GROUPS = (run, status, cluster, tools)


def build_parser() -> Parser:
    parser = Parser(
        prog="audiomill",
        description="Turn large audio corpora into training-ready data: codec tokens, speech segments, transcripts "
                    "and TTS training sets.",
        formatter_class=Formatter,
        epilog="Run 'audiomill COMMAND --help' for the flags of each command.",
    )
    parser.add_argument("--version", action="version", version=f"audiomill {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for group in GROUPS:
        group.add_commands(commands)
    parser.commands = dict(commands.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    from audiomill.errors import UsageError

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        command_config(parser, argv)
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
