"""The command line: every flag explained, bad input refused in one line before any work."""

from __future__ import annotations

import argparse
import os
import re

import pytest

from audiomill.cli import build_parser
from tests.conftest import run_audiomill

COMMANDS = ["tokenize", "status", "shards", "codecs", "resynth", "demo"]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_flag(command):
    parser = subparsers(build_parser())[command]
    text = run_audiomill(command, "--help", check=True).stdout
    for action in parser._actions:
        assert action.help and len(action.help) > 10, (command, action.dest)
        for option in action.option_strings:
            assert option in text, (command, option)


def test_top_level_help_lists_commands():
    text = run_audiomill("--help", check=True).stdout
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("args, message", [
    (["tokenize", "x.tar", "--out", "o", "--bogus"], "unrecognized arguments: --bogus"),
    (["tokenize", "x.tar", "--out", "o", "--chunk-seconds", "-3"], "expected a number >= 0"),
    (["tokenize", "x.tar"], "required: --out"),
    (["status"], "required: OUT"),
])
def test_bad_flags_fail_in_one_line(args, message, tmp_path):
    result = run_audiomill(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, message", [
    ("batch-sconds = 5\n", "'batch-sconds' is not a setting of 'audiomill tokenize'"),
    ("chunk-seconds = -1\n", "chunk-seconds = -1: expected a number >= 0"),
    ("precision = 'fp8'\n", "precision = 'fp8': expected one of fp32, tf32, bf16, fp16"),
    ("compile = 'yes'\n", "compile = 'yes': expected true or false"),
    ("out = [1, 2]\n", "expected a string or a number"),
    ("out = \n", "not valid TOML"),
])
def test_bad_config_file_fails_in_one_line(text, message, tmp_path):
    (tmp_path / "run.toml").write_text(text)
    result = run_audiomill("tokenize", "x.tar", "--out", "o", "--config", "run.toml", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiomill: error: --config run.toml: ") and message in lines[0], \
        result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


def test_missing_config_file_fails_in_one_line(tmp_path):
    result = run_audiomill("bench", "--config", "nowhere.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "audiomill: error: --config nowhere.toml: No such file or directory"


def test_missing_input_fails_in_one_line_before_any_work(tmp_path):
    result = run_audiomill("tokenize", str(tmp_path / "missing.tar"), "--out", str(tmp_path / "out"),
                           "--random-weights")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"audiomill tokenize: error: input not found: {tmp_path}/missing.tar"]
    assert not (tmp_path / "out").exists()


def test_no_weights_says_what_to_pass_before_any_work(acceptance_shards, tmp_path):
    result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(tmp_path / "out"),
                           env={"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--model-path" in lines[0] and "hubertsiuzdak/snac_24khz" in lines[0]
    assert not (tmp_path / "out").exists()


def test_model_path_of_another_rate_is_refused(acceptance_shards, tiny_snac_32k, tmp_path):
    result = run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", str(tmp_path / "out"),
                           "--model-path", tiny_snac_32k, "--devices", "cpu")
    assert result.returncode == 1
    assert "is a 32000 Hz SNAC, but --codec snac-24khz expects 24000 Hz" in result.stderr


def test_output_folder_of_another_codec_is_refused(acceptance_shards, tiny_snac, tmp_path):
    out = str(tmp_path / "out")
    run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", out, "--model-path", tiny_snac, check=True)
    result = run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", out, "--random-weights",
                           "--codec", "snac-32khz")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "was made with --codec snac-24khz, not snac-32khz" in lines[0]


def test_codecs_table_lists_snac():
    text = run_audiomill("codecs", check=True).stdout
    assert "snac-24khz" in text and "11.72, 23.44, 46.88" in text and "audiomill[snac]" in text


def test_shards_selects_numbered_range(tmp_path):
    from audiomill.corpus import write_tar

    for number in range(5):
        write_tar(str(tmp_path / f"{number:06d}.tar"), [])
    text = run_audiomill("shards", str(tmp_path), "--start", "1", "--end", "3", check=True).stdout
    assert [line.split("\t")[0] for line in text.splitlines()] == ["000001", "000002", "000003"]


def test_demo_runs_end_to_end_and_says_weights_are_random(tmp_path):
    result = run_audiomill("demo", "--out", str(tmp_path / "demo"), env={"HF_HOME": str(tmp_path / "hf")},
                           timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("randomly initialised weights") == 1
    lines = result.stderr.splitlines()
    # progress in files and audio from the first files written, before the shard with the long file is done
    first = next(number for number, line in enumerate(lines) if " INFO progress: " in line)
    assert re.search(r"progress: 0/3 shards complete, [1-9]\d* files, 0 errors, [\d.]+ s audio", lines[first])
    assert first < next(number for number, line in enumerate(lines) if "shard 000000 complete" in line)
    tokens = tmp_path / "demo" / "tokens"
    status = run_audiomill("status", str(tokens), "--check-validity", check=True).stdout
    assert "3 shards: 3 complete" in status and "0 problems" in status
    # resynth says its weights are random, and names a --key that is not there
    wavs = tmp_path / "wavs"
    missing = run_audiomill("resynth", str(tokens), "--wav-dir", str(wavs), "--key", "spk9/none")
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"audiomill resynth: error: --key 'spk9/none': no record has this key in {tokens} (keys look like "
        f"'spk0/utt00000')"] and not wavs.exists()
    one = run_audiomill("resynth", str(tokens), "--wav-dir", str(wavs), "--key", "spk1/utt00001", check=True)
    assert "randomly initialised weights (--random-weights): they are decoded with random weights too" in one.stderr
    assert sorted(os.listdir(wavs / "spk1")) == ["utt00001.wav"]


def _refused_then_accepted(refused: list[str], corrected: list[str], out, expected: str, env: dict | None = None):
    """The refused command says why in one line, exits non-zero and leaves --out as it was; the corrected one runs."""
    result = run_audiomill(*refused, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not os.path.exists(out)  # no plan.json: nothing at all
    accepted = run_audiomill(*corrected)
    assert accepted.returncode == 0, accepted.stderr


def test_a_codec_option_the_model_rejects_at_load_time_is_refused_before_any_work(acceptance_shards, tmp_path):
    from audiomill.codecs import codec_info
    from audiomill.codecs.hf import save_random

    model = save_random(codec_info("mimi"), str(tmp_path / "mimi"))
    out = str(tmp_path / "out")
    common = ["tokenize", acceptance_shards["paths"][1], "--out", out, "--codec", "mimi", "--model-path", model]
    _refused_then_accepted([*common, "--codec-option", "num_quantizers=99"], [*common, "--codec-option",
                           "num_quantizers=2"], out, "num_quantizers=99: this model has 1 to 8")


def test_random_weights_for_a_codec_that_needs_files_is_refused_before_any_work(acceptance_shards, tmp_path):
    from audiomill.codecs.units import save_random

    model = save_random(str(tmp_path / "hubert"), clusters=20)
    out = str(tmp_path / "out")
    common = ["tokenize", acceptance_shards["paths"][1], "--out", out, "--codec", "hubert-units"]
    _refused_then_accepted([*common, "--random-weights"], [*common, "--model-path", model, "--codec-option=layer=2"],
                           out, "hubert-units needs --model-path")


def test_a_missing_extra_is_refused_before_any_work(acceptance_shards, tiny_snac, tmp_path):
    shadow = tmp_path / "without-snac"  # a site where 'import snac' fails, as where the extra is not installed
    shadow.mkdir()
    (shadow / "snac.py").write_text("raise ImportError(\"No module named 'snac'\")\n")
    (shadow / "pyarrow.py").write_text("raise ImportError(\"No module named 'pyarrow'\")\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    out = str(tmp_path / "out")
    common = ["tokenize", acceptance_shards["paths"][1], "--out", out, "--model-path", tiny_snac]
    _refused_then_accepted(common, common, out, "snac-24khz needs the extra audiomill[snac]", env)
    out = str(tmp_path / "out-parquet")
    common = ["tokenize", acceptance_shards["paths"][1], "--out", out, "--model-path", tiny_snac,
              "--format", "parquet"]
    _refused_then_accepted(common, common, out, "--format parquet needs pyarrow", env)


def test_a_damaged_checkpoint_is_refused_before_any_work(acceptance_shards, tiny_snac, tmp_path):
    import shutil

    broken = tmp_path / "weights"
    shutil.copytree(tiny_snac, broken)
    (broken / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    out = str(tmp_path / "out")
    shard = acceptance_shards["paths"][1]
    _refused_then_accepted(["tokenize", shard, "--out", out, "--model-path", str(broken)],
                           ["tokenize", shard, "--out", out, "--model-path", tiny_snac], out,
                           f"snac-24khz: cannot load {broken}: UnpicklingError")


def test_two_launches_at_once_with_different_codecs_leave_one_plan(acceptance_shards, tiny_snac, tiny_snac_32k,
                                                                   tmp_path):
    import json
    import subprocess
    import sys

    for round in range(2):
        out = tmp_path / f"out{round}"
        launches = {codec: subprocess.Popen(
            [sys.executable, "-m", "audiomill", "tokenize", acceptance_shards["paths"][1], "--out", str(out),
             "--codec", codec, "--model-path", model, "--devices", "cpu"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            for codec, model in (("snac-24khz", tiny_snac), ("snac-32khz", tiny_snac_32k))}
        ended = {codec: (p.wait(timeout=300), p.stderr.read()) for codec, p in launches.items()}
        winners = [codec for codec, (code, _) in ended.items() if code == 0]
        assert len(winners) == 1, ended
        loser = next(codec for codec in ended if codec not in winners)
        code, stderr = ended[loser]
        assert code == 1 and stderr.strip().splitlines() == [
            f"audiomill tokenize: error: {out} was made with --codec {winners[0]}, not {loser}: use another --out, "
            f"or the same --codec"]
        plan = json.load(open(out / "_audiomill" / "plan.json"))
        assert [o["settings"]["codec"] for o in plan["outputs"]] == winners
        assert {json.loads(line)["codec"] for line in open(out / "000002.jsonl")} == set(winners)


def test_status_with_inputs_slices_them_as_the_plan_did(tiny_snac, tmp_path):
    from tests.conftest import sentence_audio

    folder = tmp_path / "corpus"
    folder.mkdir()
    for number in range(3):
        (folder / f"f{number}.wav").write_bytes(sentence_audio(number, "wav"))
    out = str(tmp_path / "out")
    run_audiomill("tokenize", str(folder), "--out", out, "--model-path", tiny_snac, "--files-per-shard", "2",
                  check=True)
    status = run_audiomill("status", out, str(folder), check=True).stdout
    assert "2 shards: 2 complete" in status


def test_help_claims_no_default_for_a_flag_that_turns_something_off():
    text = build_parser()._subparsers._group_actions[0].choices["bench"].format_help()
    assert "--no-naive" in text and "(default: True)" not in text.split("--no-naive", 1)[1].split("\n  -")[0]
