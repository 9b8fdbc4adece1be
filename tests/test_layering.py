"""The package's import graph: no cycles, and no core module importing the command line.

Every import counts, at module level or inside a function: an import deferred to keep
start-up fast still ties the two modules together.
"""

from __future__ import annotations

import ast
import os

import audiomill

ROOT = os.path.dirname(audiomill.__file__)


def modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def imports_of(module: str, path: str, known: set[str]) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {module: imports_of(module, path, set(found)) for module, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle():
    edges = graph()
    assert "audiomill.runner.shard" in edges and "audiomill.sinks.journal" in edges["audiomill.runner.shard"]
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_core_module_imports_the_command_line():
    edges = graph()
    def command_line(module: str) -> bool:
        return module == "audiomill.cli" or module.startswith("audiomill.cli.")

    assert "audiomill.cli.common" in edges["audiomill.cli.run"]
    importers = sorted(m for m, targets in edges.items() if any(map(command_line, targets))
                       and not command_line(m) and m != "audiomill.__main__")
    assert importers == []


def test_the_runner_knows_protocols_not_implementations():
    edges = graph()
    concrete = {m for m in edges if m.startswith(("audiomill.stages.", "audiomill.sinks.", "audiomill.codecs."))}
    concrete -= {"audiomill.sinks.journal"}  # the journal is the runner's half of every sink
    for module in ("audiomill.runner.shard", "audiomill.runner.local", "audiomill.runner.decode"):
        assert not edges[module] & concrete, (module, edges[module] & concrete)


KIND_MODULES = {"audiomill.stages.tokenize", "audiomill.stages.vad", "audiomill.stages.transcribe",
                "audiomill.stages.text", "audiomill.stages.tts"}


def test_only_stages_know_the_stage_kinds():
    """Outside ``stages/`` a kind is a name looked up in the registry: no module imports one, but ``bench``'s
    (one module per kind it measures)."""
    edges = graph()
    knowing = sorted(m for m, targets in edges.items() if targets & KIND_MODULES
                     and not m.startswith(("audiomill.stages.", "audiomill.bench")))
    assert knowing == []


def test_the_run_config_has_no_stage_setting():
    import dataclasses

    from audiomill.config import RunConfig
    from audiomill.stages import KINDS, stage_class
    from audiomill.stages.settings import settings_class

    settings = {f.name for kind in KINDS for f in dataclasses.fields(settings_class(stage_class(kind)))}
    assert len(settings) > 30
    assert not {f.name for f in dataclasses.fields(RunConfig)} & settings


def functions() -> list[tuple[str, str, int]]:
    """Every function of the package: its module, name and length in lines."""
    found = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((module, node.name, node.end_lineno - node.lineno + 1))
    return found


def test_no_function_is_over_80_lines_and_no_command_module_over_400():
    assert len(functions()) > 500
    assert [(m, name, n) for m, name, n in functions() if n > 80] == []
    command_modules = {m: path for m, path in modules().items() if m.startswith("audiomill.cli")}
    assert len(command_modules) >= 5
    lengths = {m: sum(1 for _ in open(path, encoding="utf-8")) for m, path in command_modules.items()}
    assert {m: n for m, n in lengths.items() if n > 400} == {}


def test_the_command_line_uses_argparse_public_api_only():
    """TOML defaults and help go through argparse's public API: no ``_actions``, no ``argparse._Name``."""
    for module, path in modules().items():
        if module.startswith("audiomill.cli"):
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                    private = node.attr
                    assert private == "_get_help_string", (module, node.lineno, private)  # the formatter's hook


def record_fields() -> set[str]:
    """Every record field a stage kind of audiomill declares (its ``fields``, a layout's, tokenize's)."""
    from audiomill import layouts
    from audiomill.stages import transcribe, tts, vad
    from audiomill.stages import text as text_stage
    from audiomill.stages.tokenize import tokenize_fields

    declared = {*layouts.FIELD_NAMES, *tokenize_fields(2**16, ("global_codes",))}
    for module in (vad, transcribe, text_stage, tts):
        for name in ("FIELDS", "SEGMENT_FIELDS"):
            declared |= set(getattr(module, name, {}))
    return declared


def literals(path: str) -> set[str]:
    """The strings a module's code writes out (docstrings left out)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_sinks_never_name_a_record_field():
    """A format finds the fields it treats apart (the codes) by their declared types; the only name it
    knows is ``key``, every record's, which the journal groups by."""
    declared = record_fields()
    assert {"tokens", "token_shape", "speech_segments", "text"} <= declared
    sinks = {m: path for m, path in modules().items() if m.startswith("audiomill.sinks")}
    assert len(sinks) >= 6
    named = {m: sorted(literals(path) & declared - {"key"}) for m, path in sinks.items()}
    assert {m: names for m, names in named.items() if names} == {}
