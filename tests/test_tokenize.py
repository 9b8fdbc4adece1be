"""End to end through the real command line: the backbone's acceptance."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from audiomill.audio import decode
from tests.conftest import read_jsonl, run_audiomill, snac_reference_codes

SMALL_WINDOWS = ["--chunk-seconds", "10", "--overlap-seconds", "2", "--batch-seconds", "12"]


def tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


def outputs(out) -> dict[str, bytes]:
    """The user-visible output: every .jsonl file, by name."""
    return {name: open(os.path.join(out, name), "rb").read()
            for name in sorted(os.listdir(out)) if name.endswith(".jsonl")}


@pytest.fixture(scope="module")
def reference_run(acceptance_shards, tiny_snac, tmp_path_factory):
    """One uninterrupted run with small windows: what every other run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "out"
    result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac,
                           *SMALL_WINDOWS)
    assert result.returncode == 3, result.stderr
    return out


def test_every_file_has_exactly_one_record_or_error(acceptance_shards, tiny_snac, tmp_path):
    before = tree(acceptance_shards["folder"])
    out = tmp_path / "tokens"
    result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac)
    assert result.returncode == 3, result.stderr  # complete, but some files failed
    assert "Note: " not in result.stderr  # mpg123's notes on the damaged MP3s stay off the terminal
    records = read_jsonl(out / "000001.jsonl") + read_jsonl(out / "000002.jsonl")
    errors = read_jsonl(out / "000001.errors.jsonl")
    assert not (out / "000002.errors.jsonl").exists()
    record_keys = [r["key"] for r in records]
    error_keys = [e["key"] for e in errors]
    assert sorted(record_keys) == acceptance_shards["good"]
    assert sorted(error_keys) == sorted(acceptance_shards["bad"])
    reasons = {e["key"]: e["error"] for e in errors}
    assert reasons["bad/empty"] == "empty file"
    assert reasons["bad/notaudio"] == "not audio: neither libsndfile nor FFmpeg recognises its format"
    assert "unsafe member name" in reasons["../evil"]
    for error in errors:
        assert set(error) == {"key", "tar_file", "audio_file", "error"}
    # nothing written outside --out: the input folder is untouched, no evil.mp3 anywhere
    assert tree(acceptance_shards["folder"]) == before
    assert not os.path.exists(os.path.join(os.path.dirname(acceptance_shards["folder"]), "evil.mp3"))
    assert set(os.listdir(tmp_path)) == {"tokens"}
    # records in the shard's member order, with the sidecar's metadata
    assert record_keys[:5] == ["a/utt0", "a/utt1", "a/utt2", "bad/truncated", "long/talk"]
    first = records[0]
    assert first["tar_file"] == acceptance_shards["paths"][0]
    assert first["audio_file"] == "a/utt0.mp3"
    assert first["sample_rate"] == 24000 and first["codec"] == "snac-24khz"
    assert first["text"] == "sentence 0" and first["lang"] == "en"
    assert first["token_shape"] == [len(level) for level in first["tokens"]]
    done = json.load(open(out / "_audiomill" / "done" / "000001.json"))
    assert done["items"] == 5 and done["errors"] == 3 and done["audio_seconds"] > 180


def test_codes_equal_upstream_snac_encode(acceptance_shards, tiny_snac, tmp_path):
    """Every record's codes, the three-minute file's (encoded in windows) included, equal SNAC.encode's."""
    out = tmp_path / "tokens"
    run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac,
                  "--chunk-seconds", "30", "--overlap-seconds", "4")
    records = {r["key"]: r for name in ("000001.jsonl", "000002.jsonl") for r in read_jsonl(out / name)}
    members = {}
    for path in acceptance_shards["paths"]:
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                members[member.name] = archive.extractfile(member).read()
    varied = 0
    for key, record in records.items():
        audio = decode(members[record["audio_file"]], 24000)
        assert record["num_samples"] == len(audio.samples)
        expected = snac_reference_codes(tiny_snac, audio.samples)
        assert record["tokens"] == expected, key
        varied += all(len(set(level)) > 4 for level in expected)
    assert varied == len(records)  # the codes carry information: the comparison can fail


def test_kill_at_random_moments_then_resume_gives_identical_output(acceptance_shards, tiny_snac, reference_run,
                                                                   tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "audiomill", "tokenize", *acceptance_shards["paths"], "--out", str(out),
            "--model-path", tiny_snac, *SMALL_WINDOWS]
    rng = random.Random(1234)
    kills = 0
    saw_partial = False
    for _ in range(8):
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        time.sleep(rng.uniform(1.5, 4.0))
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        status = json.loads(run_audiomill("status", str(out), "--json", "--check-validity", check=True).stdout)
        for shard in status["shards"]:
            partial = out / f"{shard['shard']}.jsonl.partial"
            if shard["state"] == "partial":
                saw_partial = True
                lines = open(partial, "rb").read().count(b"\n")
                assert shard["files"] == lines
            elif shard["state"] == "complete":
                assert (out / f"{shard['shard']}.jsonl").exists()
            else:
                assert shard["state"] == "not started", shard
            assert shard["problems"] == [], shard
    assert kills >= 2, "the run finished before it could be killed twice: the test proves nothing"
    assert saw_partial
    final = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac,
                          *SMALL_WINDOWS)
    assert final.returncode == 3, final.stderr
    assert outputs(out) == outputs(reference_run)
    assert not [n for n in os.listdir(out) if n.endswith((".partial", ".tmp"))]


def test_rerun_of_complete_output_changes_nothing(acceptance_shards, tiny_snac, reference_run):
    stamps = {n: os.stat(reference_run / n).st_mtime_ns for n in os.listdir(reference_run) if n.endswith(".jsonl")}
    result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(reference_run), "--model-path",
                           tiny_snac, *SMALL_WINDOWS)
    assert result.returncode == 3
    assert "2/2 shards complete (2 already were)" in result.stderr
    assert stamps == {n: os.stat(reference_run / n).st_mtime_ns for n in stamps}


def test_retry_errors_tries_failed_files_again(acceptance_shards, tiny_snac, reference_run, tmp_path):
    out = tmp_path / "out"
    args = ["tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac, *SMALL_WINDOWS]
    run_audiomill(*args)
    errors_before = os.stat(out / "000001.errors.jsonl").st_mtime_ns
    result = run_audiomill(*args, "--retry-errors")
    assert result.returncode == 3
    assert os.stat(out / "000001.errors.jsonl").st_mtime_ns != errors_before  # really redone
    assert outputs(out) == outputs(reference_run)


def test_two_runs_at_once_never_process_a_shard_twice(acceptance_shards, tiny_snac, reference_run, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "audiomill", "tokenize", *acceptance_shards["paths"], "--out", str(out),
            "--model-path", tiny_snac, *SMALL_WINDOWS, "--progress", "log"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    logs = [run.communicate()[1] for run in runs]
    processed = [name for log in logs for name in re.findall(r"shard (\S+) complete:", log)]
    assert sorted(processed) == ["000001", "000002"], logs
    assert outputs(out) == outputs(reference_run)
    codes = [run.returncode for run in runs]  # the last to end finds all complete, whoever wrote them
    assert 3 in codes and set(codes) <= {3, 4}, codes


def test_two_cpu_workers_give_identical_output(acceptance_shards, tiny_snac, reference_run, tmp_path):
    out = tmp_path / "out"
    result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac,
                           *SMALL_WINDOWS, "--devices", "cpu:2")
    assert result.returncode == 3, result.stderr
    assert outputs(out) == outputs(reference_run)


def test_status_lists_remaining_inputs(acceptance_shards, tiny_snac, tmp_path):
    out = tmp_path / "out"
    run_audiomill("tokenize", acceptance_shards["paths"][0], "--out", str(out), "--model-path", tiny_snac, check=False)
    remaining = tmp_path / "remaining.txt"
    result = run_audiomill("status", str(out), *acceptance_shards["paths"], "--remaining", str(remaining), check=True)
    assert "1 complete" in result.stdout and "1 not started" in result.stdout
    assert remaining.read_text().splitlines() == [acceptance_shards["paths"][1]]


@pytest.mark.parametrize("inject", ["clips>1", "samples>200000"])
def test_out_of_memory_halves_the_batch_then_the_window_and_codes_stay_the_same(
        acceptance_shards, tiny_snac, reference_run, tmp_path, inject):
    """clips>1: every batch of more than one window fails; samples>200000: so does every window over 8.3 s."""
    out = tmp_path / "out"
    result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac,
                           *SMALL_WINDOWS, env={"AUDIOMILL_INJECT_OOM": inject})
    assert result.returncode == 3, result.stderr
    assert "out of memory" in result.stderr
    if inject.startswith("samples"):
        assert "running it in" in result.stderr  # a single window was split
    assert outputs(out) == outputs(reference_run)


def test_config_file_sets_the_flags_and_the_command_line_wins(acceptance_shards, tiny_snac, reference_run, tmp_path):
    out = tmp_path / "out"
    inputs = ", ".join(f'"{path}"' for path in acceptance_shards["paths"])
    (tmp_path / "run.toml").write_text(
        f'inputs = [{inputs}]\nout = "{out}"\nmodel-path = "{tiny_snac}"\n'
        "chunk-seconds = 10\noverlap_seconds = 2.0\nbatch-seconds = 5\nprogress = \"none\"\n")
    result = run_audiomill("tokenize", "--config", str(tmp_path / "run.toml"), "--batch-seconds", "12")
    assert result.returncode == 3, result.stderr
    assert outputs(out) == outputs(reference_run)
    plan = json.loads((out / "_audiomill" / "plan.json").read_text())
    settings, config = plan["outputs"][0]["settings"], plan["config"]  # the stage's, and the run's
    assert (settings["chunk_seconds"], settings["overlap_seconds"], settings["batch_seconds"]) == (10.0, 2.0, 12.0)
    assert config["inputs"] == acceptance_shards["paths"] and config["progress"] == "none"
    assert "chunk_seconds" not in config


@pytest.mark.parametrize("inject", [None, "samples>200000"])
def test_encoding_one_batch_ahead_in_a_thread_gives_identical_output(
        acceptance_shards, tiny_snac, reference_run, tmp_path, monkeypatch, inject):
    """The GPU pipeline (encode in a thread while the batch before is written), run on CPU."""
    from audiomill.codecs import load_codec
    from audiomill.runner.shard import ShardProcessor
    from audiomill.runner.state import OutputFolder
    from audiomill.sources.discover import discover_shards
    from audiomill.stages.tokenize import TokenizeStage

    if inject:
        monkeypatch.setenv("AUDIOMILL_INJECT_OOM", inject)
    stage = TokenizeStage(load_codec("snac-24khz", tiny_snac, "cpu"), 10.0, 2.0, 12.0, pipeline=True)
    folder = OutputFolder(str(tmp_path / "out"))
    folder.create()
    processor = ShardProcessor(folder, stage, decode_workers=1)
    try:
        results = list(processor.run_shards(discover_shards(acceptance_shards["paths"]), False, lambda event: None))
        assert stage._encoder is not None  # the batches did go through the encoding thread
    finally:
        processor.close()
    assert [r.status for r in results] == ["done", "done"]
    assert stage.ooms > 0 if inject else stage.ooms == 0
    assert outputs(folder.out) == outputs(reference_run)


def test_peak_memory_does_not_grow_with_files_or_file_length(tmp_path):
    """benchmarks/memory.py at a scale CI affords: 200 files and an 8-minute file against 20 files."""
    import json as json_module

    result = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..", "benchmarks", "memory.py"),
                             "--many", "200", "--long-seconds", "480", "--json", "--work-dir", str(tmp_path)],
                            capture_output=True, text=True, check=True)
    figures = json_module.loads(result.stdout)
    # 1.13-1.20 here with 10 s CPU batches and a heap trim every 0.25 s (1.30-1.50 with a trim every 1 s)
    assert figures["many_over_few"] <= 1.5, figures
    assert figures["long_over_few"] <= 1.5, figures
    assert len(read_jsonl(tmp_path / "out-many" / "many-00000.jsonl")) == 200
    record = read_jsonl(tmp_path / "out-long" / "long-00000.jsonl")[0]
    assert record["num_samples"] == 480 * 24000


def test_a_deleted_or_cut_output_and_a_damaged_done_marker_are_noticed_and_written_again(acceptance_shards,
                                                                                         tiny_snac, tmp_path):
    out = tmp_path / "out"
    archive = tmp_path / "000002.tar"
    archive.write_bytes(open(acceptance_shards["paths"][1], "rb").read())
    common = ["tokenize", str(archive), "--out", str(out), "--model-path", tiny_snac]
    assert run_audiomill(*common).returncode == 0
    written = (out / "000002.jsonl").read_bytes()
    for damage in ("delete", "cut", "marker"):
        if damage == "delete":
            os.unlink(out / "000002.jsonl")
        elif damage == "cut":
            (out / "000002.jsonl").write_bytes(written[: len(written) // 3])
        else:
            (out / "_audiomill" / "done" / "000002.json").write_text('{"items": 4, "err')
        if damage != "marker":
            status = run_audiomill("status", str(out), "--check-validity")
            assert status.returncode == 1 and "000002" in status.stdout and "damaged" in status.stdout
            assert "1 shards: 0 complete, 1 damaged" in status.stdout
        again = run_audiomill(*common)
        assert again.returncode == 0, again.stderr
        reason = {"delete": "000002.jsonl is missing", "cut": "000002.jsonl has changed",
                  "marker": "000002.json is damaged (JSONDecodeError): ignoring it"}[damage]
        assert reason in again.stderr
        assert (out / "000002.jsonl").read_bytes() == written
        assert "0 problems" in run_audiomill("status", str(out), "--check-validity", check=True).stdout
    # killed after the done marker but before the journals were removed: the next run removes them
    for name in ("000002.jsonl.partial", "000002.errors.jsonl.partial"):
        (out / name).write_bytes(written[:100])
    assert run_audiomill(*common).returncode == 0
    assert not [n for n in os.listdir(out) if n.endswith(".partial")] and (out / "000002.jsonl").read_bytes() == written
    # the output is what was written, but the shard now holds a file it never saw: --check-validity says so
    with tarfile.open(archive, "a") as tar:
        info = tarfile.TarInfo("b/new.wav")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"RIFF"))
    status = run_audiomill("status", str(out), "--check-validity")
    assert status.returncode == 1
    assert "000002: 1 file(s) of the shard have neither a record nor an error, such as 'b/new'" in status.stdout
