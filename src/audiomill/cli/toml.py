"""TOML files as the defaults of a command's flags (``--config FILE``, and ``audiomill run FILE.toml``).

A key is a long flag of the command (``batch-seconds``, ``codec-option``) or its positional (``inputs``); each
value is checked as the flag's own parser checks it. Only argparse's public API is used: the flags a
:class:`~audiomill.cli.common.Parser` recorded as they were added, and ``set_defaults``.
"""

from __future__ import annotations

import argparse

from audiomill.cli.common import Parser
from audiomill.errors import UsageError

NOT_SETTINGS = ("help", "config", "pipeline")


def load_toml(path: str, flag: str = "--config") -> dict:
    import tomllib

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{flag} {path}: not valid TOML: {exc}") from None


def config_defaults(sub: Parser, command: str, table: dict, source: str) -> None:
    """Make the settings of the TOML ``table`` the defaults of ``sub``'s flags, checked as flags are."""
    flags: dict[str, tuple[argparse.Action, str | None]] = {}
    for action, how in sub.flags:
        if action.dest in NOT_SETTINGS:
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                flags[option[2:]] = (action, how)
        if not action.option_strings:
            flags[action.dest] = (action, how)
    defaults = {}
    for key, value in table.items():
        found = flags.get(key.replace("_", "-")) or flags.get(key)
        if found is None:
            raise UsageError(f"{source}: '{key}' is not a setting of 'audiomill {command}' (its settings are "
                             f"the long flags of 'audiomill {command} --help')")
        action, how = found
        try:
            defaults[action.dest] = _setting(action, how, value)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise UsageError(f"{source}: {key} = {value!r}: {exc}") from None
        action.required = False  # given by the file
        if not action.option_strings and action.nargs == "+":
            action.nargs = "*"
    sub.set_defaults(**defaults)


def _setting(action: argparse.Action, how: str | None, value):
    """One TOML value as the flag's parsed value; ``how`` is the flag's ``action=`` (store_true, append...)."""
    def one(item):
        if isinstance(item, (bool, dict, list)):
            raise TypeError("expected a string or a number")
        parsed = action.type(str(item)) if action.type else str(item)
        if action.choices is not None and parsed not in action.choices:
            raise ValueError(f"expected one of {', '.join(map(str, action.choices))}")
        return parsed

    if how in ("store_true", "store_false"):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value if how == "store_true" else not value
    if how == "append" or action.nargs in ("*", "+"):
        if isinstance(value, dict):  # codec-option = {bandwidth = 6}
            value = [f"{k}={v}" for k, v in value.items()]
        return [one(item) for item in (value if isinstance(value, list) else [value])]
    return one(value)


def command_config(parser: Parser, argv: list[str]) -> None:
    """Apply ``--config FILE`` of the command in ``argv`` before the command line is parsed."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    sub = parser.commands.get(command or "")
    if sub is None:
        return
    if command == "run":  # audiomill run FILE.toml [flags]: the file's settings, its stages apart
        place = argv.index("run")
        if place + 1 < len(argv) and not argv[place + 1].startswith("-"):
            path = argv[place + 1]
            table = load_toml(path, "audiomill run")
            stages = table.pop("stage", [])
            if not isinstance(stages, list) or not all(isinstance(t, dict) for t in stages):
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
    if path is not None and any(action.dest == "config" for action, _ in sub.flags):
        config_defaults(sub, command, load_toml(path), f"--config {path}")
