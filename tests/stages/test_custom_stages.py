"""Stages of one's own through the real runner: several records per file, none, a broken stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from audiomill.audio import decode
from tests.conftest import GOOD_FILES, read_jsonl, run_audiomill, sentence_audio
from tests.test_pipeline import group_files, write_pipeline

STAGES = [{"kind": "tests.stages.toy:Thirds", "name": "thirds", "delay": 0.4},
          {"kind": "tests.stages.toy:LongOnly", "name": "long", "seconds": 3.0}]


def test_three_records_per_file_and_none_for_some_resume_after_a_kill(acceptance_shards, tmp_path):
    shards = acceptance_shards["paths"]
    reference = tmp_path / "reference"
    assert run_audiomill("run", write_pipeline(tmp_path / "ref.toml", shards, reference, STAGES)).returncode == 3
    thirds = read_jsonl(reference / "thirds" / "000002.jsonl")
    assert [(r["key"], r["segment"]) for r in thirds] == [(k, i) for k in ("b/utt3", "b/utt4", "b/utt5", "b/utt6")
                                                          for i in range(3)]
    index, ext = GOOD_FILES["b/utt5"]
    samples = decode(sentence_audio(index, ext), 16000).samples
    bounds = np.linspace(0, len(samples), 4).astype(int)
    mine = [r for r in thirds if r["key"] == "b/utt5"]
    assert [r["end"] for r in mine] == [b / 16000 for b in bounds[1:]]
    assert mine[1]["rms"] == round(float(np.sqrt(np.mean(samples[bounds[1]:bounds[2]] ** 2))), 6)
    long = {r["key"]: r["seconds"] for r in read_jsonl(reference / "long" / "000001.jsonl")}
    lengths = {r["key"]: r["end"] for r in read_jsonl(reference / "thirds" / "000001.jsonl") if r["segment"] == 2}
    assert set(long) == {key for key, seconds in lengths.items() if seconds > 3.0}
    assert "long/talk" in long and len(long) < len(lengths)  # some files have a record, some none
    assert long["long/talk"] == lengths["long/talk"] and long["long/talk"] > 170
    done = json.load(open(reference / "_audiomill" / "done" / "thirds" / "000002.json"))
    assert done["items"] == 4 and done["records"] == 12

    out = tmp_path / "out"
    pipeline = write_pipeline(tmp_path / "run.toml", shards, out, STAGES)
    process = subprocess.Popen([sys.executable, "-m", "audiomill", "run", pipeline], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 60
    journal = out / "thirds" / "000001.jsonl.partial"
    while time.time() < deadline and not (journal.exists() and journal.read_bytes().count(b"\n") >= 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert journal.read_bytes().count(b"\n") >= 2, "killed after the shard was done: the test proves nothing"
    assert run_audiomill("run", pipeline).returncode == 3
    for group in ("thirds", "long"):
        assert group_files(out / group) == group_files(reference / group)


def test_a_stage_that_fails_on_every_clip_stops_the_run_with_its_traceback(acceptance_shards, tmp_path):
    out = tmp_path / "out"
    stages = [{"kind": "tests.stages.toy:Broken", "name": "broken"}]
    started = time.time()
    result = run_audiomill("run", write_pipeline(tmp_path / "p.toml", [acceptance_shards["paths"][1]], out, stages))
    assert time.time() - started < 60
    assert result.returncode == 1
    assert "stage broken failed on each of the first 3 files" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr and "TypeError" in result.stderr
    assert not [n for n in os.listdir(out / "broken") if "errors" in n and os.path.getsize(out / "broken" / n)]
    assert not (out / "_audiomill" / "done" / "broken" / "000002.json").exists()


def test_a_stage_whose_package_is_missing_is_refused_before_any_work(acceptance_shards, tmp_path):
    out = tmp_path / "out"
    stages = [{"kind": "tests.stages.toy:NeedsMissing", "name": "needs"}]
    result = run_audiomill("run", write_pipeline(tmp_path / "p.toml", [acceptance_shards["paths"][1]], out, stages))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "audiomill run: error: stage needs needs the package audiomill_no_such_package "
        "(No module named 'audiomill_no_such_package')"]
    assert not out.exists()
    unknown = run_audiomill("run", write_pipeline(tmp_path / "q.toml", [acceptance_shards["paths"][1]], out,
                                                  [{"kind": "no-such-kind", "name": "v"}]))
    assert unknown.returncode == 1 and "unknown stage kind 'no-such-kind'" in unknown.stderr and not out.exists()
