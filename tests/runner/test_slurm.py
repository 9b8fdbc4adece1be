"""The SLURM executor on a real single-node cluster on localhost: arrays, preemption, time limits,
--until-done, and plain sbatch scripts, each compared byte for byte with a local run."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from audiomill.errors import UsageError
from audiomill.runner.slurm import extra_sbatch, parse_time
from audiomill.runner.state import OutputFolder
from tests.conftest import run_audiomill
from tests.conftest import first_record_written
from tests.runner.conftest import outputs, squeue, tokenize_locally, wait_until


def slurm_tokenize(inputs, out, model, env, *flags: str, background: bool = False):
    args = ["tokenize", *inputs, "--out", str(out), "--model-path", model, "--devices", "cpu",
            "--executor", "slurm", "--poll-seconds", "0.5", *flags]
    if background:
        return subprocess.Popen([sys.executable, "-m", "audiomill", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**env, "HF_HUB_OFFLINE": "1"})
    return run_audiomill(*args, env=env, timeout=600)


def task_records(out) -> list[dict]:
    return [json.load(open(path)) for path in sorted(glob.glob(os.path.join(out, "_audiomill", "tasks", "*.json")))]


def logs_of(out) -> str:
    return "".join(open(path).read() for path in sorted(glob.glob(os.path.join(out, "_audiomill", "logs", "slurm-*"))))


def assert_valid(out, env) -> None:
    status = run_audiomill("status", str(out), "--check-validity", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "8 complete" in status.stdout and "0 problems" in status.stdout


def test_time_limits_parse_as_slurm_reads_them():
    assert [parse_time(t) for t in ("90", "1:30", "2:00:00", "1-0", "1-2:30", "0-0:0:59")] == [90, 2, 120, 1440,
                                                                                                   1590, 1]
    for bad in ("", "2h", "0", "1:2:3:4"):
        with pytest.raises(UsageError):
            parse_time(bad)
    assert extra_sbatch(["reservation=big", "--exclusive", "#SBATCH --comment=x y"]) == {
        "reservation": "big", "exclusive": True, "comment": "x y"}


def test_array_over_eight_shards_matches_the_local_executor(slurm_cluster, eight_shards, eight_reference, tiny_snac,
                                                            tmp_path):
    out = tmp_path / "out"
    result = slurm_tokenize(eight_shards, out, tiny_snac, slurm_cluster, "--nodes-max", "8", "--cpus-per-task", "1",
                            "--until-done")
    assert result.returncode == 3, result.stderr  # complete, with the one file that is not audio
    assert "submitted SLURM array job" in result.stderr
    assert outputs(out) == eight_reference
    records = task_records(out)
    assert sorted(r["task"] for r in records) == list(range(8))
    assert {r["state"] for r in records} == {"finished"}
    assert sum(r["shards_written"] for r in records) == 8  # every shard written once, by one task
    for record in records:  # one log per task, in the output folder
        assert os.path.getsize(out / record["log"]) > 0
    assert_valid(out, slurm_cluster)
    again = slurm_tokenize(eight_shards, out, tiny_snac, slurm_cluster)
    assert again.returncode == 3 and "submitted" not in again.stderr  # nothing left: nothing submitted


def test_preempted_task_requeues_and_finishes_identically(slurm_cluster, eight_shards, eight_reference, tiny_snac,
                                                          tmp_path):
    out = tmp_path / "out"
    result = slurm_tokenize(eight_shards, out, tiny_snac, slurm_cluster, "--nodes-max", "1")
    assert result.returncode == 0, result.stderr  # submitted; without --until-done it does not wait
    job = squeue(slurm_cluster, "-o", "%F")[0]
    wait_until(lambda: first_record_written(out), 120, "the first record")
    folder = OutputFolder(str(out))
    holders = wait_until(lambda: [h for s in folder.shards() if (h := folder.holder(s.name))], 30, "a held shard")
    assert holders[0]["holder"].startswith(f"slurm {job}")  # status names the job holding the shard
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm_cluster, check=True)
    wait_until(lambda: not squeue(slurm_cluster, "-j", job), 180, "the requeued job to finish", interval=0.5)
    assert outputs(out) == eight_reference
    logs = logs_of(out)
    assert "SIGUSR2 received" in logs and "resumable" in logs and "requeueing this task" in logs
    (record,) = task_records(out)
    assert record["attempt"] >= 1 and record["state"] == "finished"
    assert_valid(out, slurm_cluster)


def test_one_minute_time_limit_requeues_mid_shard_and_finishes_identically(slurm_cluster, long_shards, tiny_snac,
                                                                          tmp_path):
    out = tmp_path / "out"
    # SLURM looks at time limits every 30 s: with the warning 30 s before a one-minute limit, the first
    # look after the start sends USR2, while this ~45 s plan is still being encoded. The local reference
    # runs meanwhile (the task's wait for its signal is most of this test's time).
    launcher = slurm_tokenize(long_shards, out, tiny_snac, slurm_cluster, "--nodes-max", "1", "--time", "1",
                              "--signal-seconds", "30", "--until-done", background=True)
    try:
        reference = tokenize_locally(long_shards, tmp_path / "reference", tiny_snac)
        _, stderr = launcher.communicate(timeout=600)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, stderr
    assert outputs(out) == reference
    logs = logs_of(out)
    assert "SIGUSR2 received" in logs and "resumable" in logs and "requeueing this task" in logs, logs
    (record,) = task_records(out)
    assert record["attempt"] >= 1
    status = run_audiomill("status", str(out), "--check-validity", env=slurm_cluster)
    assert status.returncode == 0 and "0 problems" in status.stdout


def test_until_done_finishes_a_plan_whose_task_was_killed_outright(slurm_cluster, eight_shards, eight_reference,
                                                                   tiny_snac, tmp_path):
    out = tmp_path / "out"
    launcher = slurm_tokenize(eight_shards, out, tiny_snac, slurm_cluster, "--nodes-max", "1", "--until-done",
                              background=True)
    try:
        wait_until(lambda: first_record_written(out), 120, "the first record")
        (record,) = task_records(out)
        os.kill(record["pid"], signal.SIGKILL)  # as the OOM killer would: no handler, no last word
        status = wait_until(lambda: (lambda s: s if "lost" in s.stdout else None)(
            run_audiomill("status", str(out), env=slurm_cluster)), 60, "status to call the killed task lost")
        assert "its shards are free again" in status.stdout
        _, stderr = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    assert launcher.returncode == 3, stderr
    assert stderr.count("submitted SLURM array job") == 2, stderr  # the killed round, then the rest
    assert outputs(out) == eight_reference
    assert_valid(out, slurm_cluster)


def test_slurm_script_runs_the_plan_with_plain_sbatch(slurm_cluster, eight_shards, eight_reference, tiny_snac,
                                                      tmp_path):
    out, script = tmp_path / "out", tmp_path / "job.sh"
    made = run_audiomill("slurm-script", *eight_shards, "--out", str(out), "--model-path", tiny_snac, "--devices",
                         "cpu", "--nodes-max", "2", "--time", "10", "--sbatch", "comment=audiomill-test",
                         "--script", str(script), env=slurm_cluster)
    assert made.returncode == 0, made.stderr
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text and "#SBATCH --comment=audiomill-test" in text
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                               env=slurm_cluster, check=True)
    job = submitted.stdout.strip().split(";")[0]
    wait_until(lambda: not squeue(slurm_cluster, "-j", job), 180, "the script's array to finish", interval=0.5)
    assert outputs(out) == eight_reference
    again = run_audiomill("slurm-script", "--out", str(out), env=slurm_cluster)
    assert again.returncode == 1 and "nothing to submit" in again.stderr


def test_a_crashed_task_shows_its_traceback_in_status(slurm_cluster, eight_shards, tiny_snac, tmp_path):
    broken = tmp_path / "weights"
    shutil.copytree(tiny_snac, broken)
    out = tmp_path / "out"
    launch = slurm_tokenize(eight_shards[:2], out, str(broken), slurm_cluster, "--until-done", background=True)
    # the launch loads the weights before it plans; damaged once planned, they make every task fail
    wait_until(lambda: (out / "_audiomill" / "plan.json").exists(), 120, "the plan")
    for name in os.listdir(broken):
        if name != "config.json":
            (broken / name).write_bytes(b"not a checkpoint")
    _, stderr = launch.communicate(timeout=600)
    assert launch.returncode == 4, stderr  # not complete
    assert "completed nothing" in stderr
    status = run_audiomill("status", str(out), env=slurm_cluster)
    assert "tasks: 2 crashed" in status.stdout, status.stdout  # one task per shard
    assert "    error: UnpicklingError" in status.stdout and "last traceback line:" in status.stdout
    for record in task_records(out):
        assert "Traceback" in record["error"]
        assert "Traceback" in open(out / record["log"]).read()


def test_transcribe_array_gives_the_manifest_of_a_local_run(slurm_cluster, eight_shards, tmp_path):
    """Transcripts (pocketsphinx's English model, no grammar) of two shards: each task writes its shard, and
    the one manifest.jsonl, made when the run ends, is the local run's byte for byte."""
    args = ["transcribe", *eight_shards[:2], "--backend", "pocketsphinx", "--devices", "cpu"]
    local = run_audiomill(*args, "--out", str(tmp_path / "local"), timeout=600)
    assert local.returncode == 0, local.stderr
    out = tmp_path / "slurm"
    result = run_audiomill(*args, "--out", str(out), "--executor", "slurm", "--poll-seconds", "0.5", "--nodes-max",
                           "2", "--cpus-per-task", "1", "--until-done", env=slurm_cluster, timeout=600)
    assert result.returncode == 0, result.stderr
    assert sorted(r["task"] for r in task_records(out)) == [0, 1]
    manifest = open(out / "manifest.jsonl", "rb").read()
    assert manifest == open(tmp_path / "local" / "manifest.jsonl", "rb").read()
    assert len(manifest.splitlines()) == 6 and outputs(out) == outputs(tmp_path / "local")


def test_prepare_tts_array_gives_the_layout_of_a_local_run(slurm_cluster, utterances, release, tmp_path):
    """The split and every file of IndexTTS2's layout are the same from a SLURM array (2 tasks over 2 shards)
    as from a local run."""
    from tests.sinks.conftest import output_tree

    args = ["prepare-tts", utterances["manifest"], "--tokenizer", utterances["tokenizer"], "--language", "en",
            "--model-path", release, "--val-ratio", "0.5", "--files-per-shard", "5", "--devices", "cpu"]
    local = run_audiomill(*args, "--out", str(tmp_path / "local"), timeout=600)
    assert local.returncode == 3, local.stderr
    out = tmp_path / "slurm"
    result = run_audiomill(*args, "--out", str(out), "--executor", "slurm", "--poll-seconds", "0.5", "--nodes-max",
                           "2", "--cpus-per-task", "1", "--until-done", env=slurm_cluster, timeout=600)
    assert result.returncode == 3, result.stderr
    assert sorted(r["task"] for r in task_records(out)) == [0, 1]
    layout = {k: v for k, v in output_tree(out).items() if not k.startswith(("text/", "tts/"))}
    assert layout == {k: v for k, v in output_tree(tmp_path / "local").items() if not k.startswith(("text/", "tts/"))}
    assert output_tree(out) == output_tree(tmp_path / "local")
    assert b"utt_000003" in layout["train_manifest.jsonl"] + layout["val_manifest.jsonl"]
