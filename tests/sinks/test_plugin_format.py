"""A format from a package of one's own, registered by its entry points and nothing else: --format takes it, a
killed run resumes to the same bytes, and status and push find its files."""

from __future__ import annotations

import json
import os

from tests.conftest import read_jsonl, run_audiomill
from tests.sinks.conftest import kill_when, output_tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def journaled(path) -> int:
    try:
        with open(path, "rb") as handle:
            return handle.read().count(b"\n")
    except FileNotFoundError:
        return 0


def test_a_registered_format_is_written_resumed_and_found(acceptance_shards, tiny_snac, plain_run, tmp_path,
                                                          monkeypatch):
    site = tmp_path / "site"
    info = site / "audiomill_tsv-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: audiomill-tsv\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[audiomill.formats]\ntsv = tests.sinks.plugin_format\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), ROOT, os.environ.get("PYTHONPATH", "")]))
    assert "tsv" in run_audiomill("tokenize", "--help").stdout

    args = ["tokenize", *acceptance_shards["paths"], "--model-path", tiny_snac, "--format", "tsv"]
    reference = tmp_path / "reference"
    assert run_audiomill(*args, "--out", str(reference)).returncode == 3
    lines = (reference / "000002.tsv").read_text().splitlines()
    assert [json.loads(line.split("\t", 1)[1]) for line in lines] == plain_run
    assert [line.split("\t", 1)[0] for line in lines] == [r["key"] for r in plain_run]
    expected = output_tree(reference)

    out = tmp_path / "out"
    kill_when([*args, "--out", str(out)], lambda: journaled(out / "000001.tsv.partial") >= 2)
    assert journaled(out / "000001.tsv.partial") >= 2 and not (out / "000001.tsv").exists()
    assert run_audiomill(*args, "--out", str(out)).returncode == 3
    assert output_tree(out) == expected

    status = json.loads(run_audiomill("status", str(out), "--json", "--check-validity", check=True).stdout)
    assert [s["state"] for s in status["shards"]] == ["complete", "complete"] and status["totals"]["problems"] == 0
    listed = run_audiomill("push", str(out), "--repo", "me/x", "--dry-run", check=True).stdout.splitlines()
    assert {"000001.tsv", "000002.tsv", "README.md"} <= set(listed)
    assert read_jsonl(out / "000001.errors.jsonl")
