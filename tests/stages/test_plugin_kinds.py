"""A stage kind from a package of one's own, registered by its entry points and nothing else: its command,
flags, --config keys, [[stage]] keys, plan, refusal of a changed setting and dataset card all come from its one
declaration of settings."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from audiomill.audio import decode
from tests.conftest import GOOD_FILES, read_jsonl, run_audiomill, sentence_audio
from tests.test_pipeline import write_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict:
    """An installed distribution (its dist-info, as pip leaves it) that registers ``loudness``."""
    site = tmp_path_factory.mktemp("site")
    info = site / "audiomill_loudness-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: audiomill-loudness\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[audiomill.stages]\nloudness = tests.stages.plugin:Loudness\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), ROOT, os.environ.get("PYTHONPATH", "")])}


def rms(key: str) -> float:
    index, ext = GOOD_FILES[key]
    samples = decode(sentence_audio(index, ext), 16000).samples
    return float(np.sqrt(np.mean(samples ** 2)))


def test_a_registered_kind_gets_a_command_flags_config_keys_a_plan_and_a_card(acceptance_shards, plugin_env,
                                                                               tmp_path):
    shard = acceptance_shards["paths"][1]
    helped = run_audiomill("loudness", "--help", env=plugin_env, check=True).stdout
    assert "--scale X" in helped and "each file's RMS level is written times this" in helped
    assert "--log-every N" in helped
    assert "loudness" in run_audiomill("--help", env=plugin_env, check=True).stdout

    out = tmp_path / "out"
    run_audiomill("loudness", shard, "--out", str(out), "--scale", "2", env=plugin_env, check=True)
    records = {r["key"]: r["rms"] for r in read_jsonl(out / "000002.jsonl")}
    assert records == {key: round(rms(key) * 2, 6) for key in ("b/utt3", "b/utt4", "b/utt5", "b/utt6")}
    plan = json.loads((out / "_audiomill" / "plan.json").read_text())
    assert plan["outputs"] == [{"group": "", "kind": "loudness", "settings": {"scale": 2.0, "log_every": 0}}]
    assert "loudness (2.0), 1 complete shards" in (out / "README.md").read_text()

    refused = run_audiomill("loudness", shard, "--out", str(out), "--scale", "3", env=plugin_env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"audiomill loudness: error: {out} was made with --scale 2.0, not 3.0: use another --out, or the same "
        f"--scale"]
    again = run_audiomill("loudness", shard, "--out", str(out), "--scale", "2", "--log-every", "1", env=plugin_env)
    assert again.returncode == 0, again.stderr  # a setting that does not change the output may change
    bad = run_audiomill("loudness", shard, "--out", str(tmp_path / "bad"), "--scale", "-1", env=plugin_env)
    assert bad.returncode == 2 and "expected a number >= 0" in bad.stderr and not (tmp_path / "bad").exists()

    config = tmp_path / "loudness.toml"
    config.write_text(f'inputs = ["{shard}"]\nout = "{tmp_path / "configured"}"\nscale = 2\n')
    run_audiomill("loudness", "--config", str(config), env=plugin_env, check=True)
    assert (tmp_path / "configured" / "000002.jsonl").read_bytes() == (out / "000002.jsonl").read_bytes()
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(f'inputs = ["{shard}"]\nout = "{tmp_path / "w"}"\nloudest = 2\n')
    assert "'loudest' is not a setting of 'audiomill loudness'" in run_audiomill(
        "loudness", "--config", str(wrong), env=plugin_env).stderr

    piped = tmp_path / "piped"
    stages = [{"kind": "loudness", "name": "level", "scale": 2}]
    run_audiomill("run", write_pipeline(tmp_path / "p.toml", [shard], piped, stages), env=plugin_env, check=True)
    assert (piped / "level" / "000002.jsonl").read_bytes() == (out / "000002.jsonl").read_bytes()
    unknown = run_audiomill("run", write_pipeline(tmp_path / "q.toml", [shard], tmp_path / "q",
                                                  [{"kind": "loudness", "name": "level", "gain": 2}]), env=plugin_env)
    assert unknown.stderr.strip().splitlines()[-1] == (
        "audiomill run: error: a loudness stage has no setting gain; its settings: log-every, scale")


def test_bench_runs_a_registered_kind_with_its_settings(plugin_env, tmp_path):
    result = run_audiomill("bench", "--stage", "loudness", "--set", "scale=2", "--corpus-seconds", "20",
                           "--longest-seconds", "8", "--repeat", "1", "--json", env=plugin_env, check=True)
    figures = json.loads(result.stdout)
    assert figures["stage"] == "loudness" and figures["settings"] == {"scale": 2.0, "log_every": 0}
    assert figures["corpus_audio_seconds"] >= 20
    for name in ("stage_ceiling", "decode_ceiling", "ceiling", "end_to_end"):
        assert figures[name] > 0
    both = 1 / (1 / figures["stage_ceiling"] + 1 / figures["decode_ceiling"])  # (each figure rounded to 0.01)
    assert abs(figures["ceiling"] - both) <= 0.02 * max(1.0, both)
    text = run_audiomill("bench", "--stage", "tests.stages.plugin:Loudness", "--corpus-seconds", "10",
                         "--longest-seconds", "4", "--repeat", "1", env=plugin_env, check=True).stdout
    assert "stage ceiling" in text and "end to end / ceiling" in text
    wrong = run_audiomill("bench", "--stage", "loudness", "--set", "gain=2", env=plugin_env)
    assert wrong.returncode == 1 and "a loudness stage has no setting gain" in wrong.stderr

def test_every_declared_default_is_written_once():
    """A setting's default literal stands once in the package: in its declaration (or in what the declaration
    names), never again as another dataclass field or a flag's ``default=``."""
    import dataclasses
    import re

    import audiomill
    from audiomill.stages import KINDS, stage_class
    from audiomill.stages.settings import default_of, settings_class

    root = os.path.dirname(audiomill.__file__)
    texts = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    texts[os.path.relpath(os.path.join(folder, name), root)] = handle.read()
    found = {}
    for kind in KINDS:
        for spec in dataclasses.fields(settings_class(stage_class(kind))):
            value = default_of(spec)
            if isinstance(value, bool) or value in (None, "", 0, {}, []):
                continue  # "nothing" is no number to keep in step
            literal = re.escape(json.dumps(value) if isinstance(value, str) else repr(value))
            field = re.compile(rf"^\s+{spec.name}\s*:[^=\n]*=\s*(setting\()?\s*{literal}(?![\w.])", re.M)
            flag = re.compile(rf"--{spec.name.replace('_', '-')}\"[^)]*default\s*=\s*{literal}(?![\w.])")
            places = [(path, text[:m.start()].count("\n") + 1) for path, text in texts.items()
                      for pattern in (field, flag) for m in pattern.finditer(text)]
            found[(kind, spec.name)] = places
    assert len(found) > 10
    assert {key: places for key, places in found.items() if len(places) > 1} == {}
