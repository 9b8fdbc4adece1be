"""A stage kind's settings, declared once.

A kind's ``Settings`` is a dataclass whose fields are made with :func:`setting`: each carries its
default, its help, its flag, and whether it changes what is written (``output``). From that one
declaration come the command's flags (``audiomill/cli``), the ``[[stage]]`` keys and TOML ``--config``
defaults (:func:`from_table`), the refusal of a changed stage, where a setting with ``output=False`` may
change between launches (:func:`changed`, :func:`shown`), and the card's words (``describe`` on the kind)::

    @dataclass
    class Settings:
        width: float = setting(1.0, "seconds of each piece", minimum=0.0)
        verbose: bool = setting(False, "log each piece", output=False)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from audiomill.errors import UsageError


@dataclass(frozen=True)
class Setting:
    """What a settings field says about itself, beside its default."""

    help: str
    flag: str = ""  # "--chunk-seconds"; "" for the field's name with dashes
    short: str = ""  # "-c"
    output: bool = True  # False: it does not change what is written, so a later launch may change it
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()  # the names a registry knows, or a call to it
    minimum: float | None = None  # numbers: at least this
    positive: bool = False  # numbers: more than zero
    metavar: str | None = None
    required: bool = False  # a command must be given it (it has no meaningful default)
    hidden: bool = False  # resolved by the kind's check (where the weights were found): never a flag or key
    parse: Callable[[Any], Any] | None = None  # a flag's or key's value (a repeated flag: the list) -> the setting
    repeat: bool = False  # the flag may be given several times (its values go to ``parse`` as a list)
    shown: bool = False  # the dataset card names this setting's value


def setting(default: Any, help: str = "", **meta: Any) -> Any:
    """A settings field: ``default`` and what :class:`Setting` holds (a dict or list default is copied)."""
    info = Setting(help, **meta)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"setting": info})
    return dataclasses.field(default=default, metadata={"setting": info})


def declared(cls: type) -> list[tuple[dataclasses.Field, Setting]]:
    """The fields of a settings dataclass with what each declares (fields made without :func:`setting`
    count as hidden)."""
    found = []
    for spec in dataclasses.fields(cls):
        info = spec.metadata.get("setting") or Setting("", hidden=True)
        found.append((spec, info))
    return found


def settings_class(kind_class: type) -> type | None:
    """A stage kind's settings dataclass, if it declares one."""
    settings = getattr(kind_class, "Settings", None)
    return settings if dataclasses.is_dataclass(settings) else None


def flag_of(spec: dataclasses.Field, info: Setting) -> str:
    return info.flag or "--" + spec.name.replace("_", "-")


def default_of(spec: dataclasses.Field) -> Any:
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default  # type: ignore[misc]


def field_of(cls: type, name: str) -> tuple[dataclasses.Field, Setting]:
    """Setting ``name`` of ``cls``: its field and what it declares."""
    return next((spec, info) for spec, info in declared(cls) if spec.name == name)


def default(cls: type, name: str) -> Any:
    """The declared default of setting ``name`` of ``cls`` (for a command that offers it beside others)."""
    return default_of(field_of(cls, name)[0])


def choices_of(info: Setting) -> tuple[str, ...]:
    return tuple(info.choices() if callable(info.choices) else info.choices)


def value_of(spec: dataclasses.Field, info: Setting, value: Any, where: str) -> Any:
    """One value from a flag or a table as the setting's type; wrong ones are one line naming ``where`` (for a
    flag, "": argparse names it)."""
    def wrong(why: str) -> UsageError:
        return UsageError(f"{where}: {why}" if where else why)

    if info.parse is not None:
        return info.parse(value)
    default = default_of(spec)
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "")
    if isinstance(default, bool) or kind == "bool":
        if not isinstance(value, bool):
            raise wrong(f"expected true or false, not {value!r}")
        return value
    if value is None:
        return None
    number = kind.startswith(("float", "int")) or (isinstance(default, (int, float)) and not isinstance(default, bool))
    if number:
        try:
            if isinstance(value, bool):
                raise ValueError
            parsed: float | int = (int if kind.startswith("int") else float)(value)
        except (TypeError, ValueError):
            raise wrong(f"expected a number, not {value!r}") from None
        if info.positive and parsed <= 0:
            raise wrong(f"expected a number > 0, not {value!r}")
        if info.minimum is not None and parsed < info.minimum:
            raise wrong(f"expected a number >= {info.minimum:g}, not {value!r}")
        if kind.startswith("int") and isinstance(value, float) and value != int(value):
            raise wrong(f"expected a whole number, not {value!r}")
        return parsed
    if isinstance(value, (dict, list, bool)):
        raise wrong(f"expected a string, not {value!r}")
    value = str(value)
    choices = choices_of(info)
    if choices and value not in choices:
        raise UsageError(f"{where} {value}: expected one of {', '.join(choices)}" if where
                         else f"expected one of {', '.join(choices)}")
    return value


def from_table(cls: type, table: dict[str, Any], kind: str) -> dict[str, Any]:
    """A ``[[stage]]`` table's (or a ``--config`` file's) settings, keyed by field, typed as the flags parse
    them; a key that is not a setting is one line listing those there are. Keys may be written with dashes,
    and as the flag is named (``codec-option`` for ``codec_options``)."""
    names: dict[str, tuple[dataclasses.Field, Setting]] = {}
    for spec, info in declared(cls):
        names[spec.name] = (spec, info)
        names[flag_of(spec, info)[2:].replace("-", "_")] = (spec, info)
    settings: dict[str, Any] = {}
    unknown = []
    for key, value in table.items():
        found = names.get(key.replace("-", "_"))
        if found is None:
            unknown.append(key)
            continue
        spec, info = found
        settings[spec.name] = value if info.hidden else value_of(spec, info, value, flag_of(spec, info))
    if unknown:
        known = sorted(spec.name.replace("_", "-") for spec, info in declared(cls) if not info.hidden)
        raise UsageError(f"a {kind} stage has no setting {', '.join(sorted(unknown))}; its settings: "
                         f"{', '.join(known)}")
    return settings


def shown(value: Any) -> str:
    """A setting's value as a user types it, for messages."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()) or "(none)"
    return str(value)


def changed(cls: type | None, old: dict[str, Any], new: dict[str, Any], ignore: set[str] = frozenset()
            ) -> tuple[str, Any, Any] | None:
    """The first setting that writes other output (its flag, the old and the new value), if one does: of a
    declared ``cls``, those with ``output``; of a kind without a declaration, every one but ``ignore``."""
    flags: dict[str, str] = {}
    skip = set(ignore)
    if cls is not None:
        flags = {spec.name: flag_of(spec, info) for spec, info in declared(cls)}
        skip |= {spec.name for spec, info in declared(cls) if not info.output or info.hidden}
    for key in sorted(set(old) | set(new)):
        if key in skip:
            continue
        if old.get(key) != new.get(key):
            return flags.get(key, key), old.get(key), new.get(key)
    return None
