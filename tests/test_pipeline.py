"""`audiomill run FILE.toml`: several stages over one decode, each equal to its own tokenize run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from audiomill.codecs import codec_info
from tests.conftest import run_audiomill

WINDOWS = {"chunk-seconds": 10, "overlap-seconds": 2, "batch-seconds": 12}
FLAGS = ["--chunk-seconds", "10", "--overlap-seconds", "2", "--batch-seconds", "12"]
FINAL = (".jsonl", ".jsonl.gz", ".parquet")


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def write_pipeline(path, inputs: list[str], out, stages: list[dict], fmt: str = "jsonl", **settings) -> str:
    lines = [f"inputs = {toml_value(inputs)}", f"out = {toml_value(str(out))}", f"format = {toml_value(fmt)}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    for stage in stages:
        lines.append("\n[[stage]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in stage.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def journaled(out) -> int:
    """How far a run has got: records journaled in every stage's partial files, and shards finished."""
    count = 0
    for folder, _, names in os.walk(out):
        for name in names:
            try:
                if name.endswith(".partial"):
                    with open(os.path.join(folder, name), "rb") as handle:
                        count += handle.read().count(b"\n")
                elif os.sep + "done" in folder:
                    count += 1000
            except FileNotFoundError:  # finished between the walk and the open
                continue
    return count


def group_files(folder) -> dict[str, bytes]:
    """The final files of one output group (records and errors), by name."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if name.endswith(FINAL)}


@pytest.fixture(scope="module")
def models(tiny_snac, tmp_path_factory) -> dict[str, str]:
    from audiomill.codecs import hf, units

    return {"snac-24khz": tiny_snac,
            "mimi": hf.save_random(codec_info("mimi"), str(tmp_path_factory.mktemp("mimi"))),
            "hubert-units": units.save_random(str(tmp_path_factory.mktemp("hubert")), clusters=50)}


def three_stages(models) -> list[dict]:
    return [{"kind": "tokenize", "name": "snac", "codec": "snac-24khz", "model-path": models["snac-24khz"]},
            {"kind": "tokenize", "name": "mimi", "codec": "mimi", "codec-option": {"num_quantizers": 4},
             "model-path": models["mimi"]},
            {"kind": "tokenize", "name": "units", "codec": "hubert-units", "codec-option": {"layer": 2},
             "model-path": models["hubert-units"]}]


@pytest.fixture(scope="module")
def separate(acceptance_shards, models, tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Each stage as its own 'audiomill tokenize' run."""
    found = {}
    for stage in three_stages(models):
        out = tmp_path_factory.mktemp(f"alone-{stage['name']}")
        options = [f"--codec-option={k}={v}" for k, v in stage.get("codec-option", {}).items()]
        result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--codec", stage["codec"],
                               "--model-path", stage["model-path"], *options, *FLAGS)
        assert result.returncode == 3, result.stderr
        found[stage["name"]] = group_files(out)
    return found


@pytest.fixture(scope="module")
def together(acceptance_shards, models, tmp_path_factory) -> dict:
    """The three stages in one uninterrupted run, with every decode traced."""
    folder = tmp_path_factory.mktemp("together")
    trace = folder / "decodes.txt"
    pipeline = write_pipeline(folder / "pipeline.toml", acceptance_shards["paths"], folder / "out",
                              three_stages(models), **WINDOWS)
    started = time.time()
    result = run_audiomill("run", pipeline, env={"AUDIOMILL_TRACE_DECODES": str(trace)})
    assert result.returncode == 3, result.stderr
    return {"out": folder / "out", "pipeline": pipeline, "trace": trace.read_text().splitlines(),
            "seconds": time.time() - started}


def test_each_stage_equals_its_own_tokenize_run_and_each_file_is_decoded_once(together, separate,
                                                                              acceptance_shards):
    out = together["out"]
    for name in ("snac", "mimi", "units"):
        assert group_files(out / name) == separate[name], name
    assert {n for n in os.listdir(out) if not n.startswith("_")} == {"snac", "mimi", "units", "README.md"}
    # every file the sources could hand over was decoded exactly once, for all three stages
    decoded = Counter(line.split("\t")[0] for line in together["trace"])
    assert set(decoded.values()) == {1}
    expected = {f"000001/{k}" for k in ["a/utt0", "a/utt1", "a/utt2", "bad/empty", "bad/truncated",
                                         "bad/notaudio", "long/talk"]}
    expected |= {f"000002/{k}" for k in ["b/utt3", "b/utt4", "b/utt5", "b/utt6"]}
    assert set(decoded) == expected
    assert {line.split("\t")[1] for line in together["trace"]} == {"0,1,2"}  # three views (rates, windows)
    status = json.loads(run_audiomill("status", str(out), "--json", "--check-validity", check=True).stdout)
    assert sorted((s["stage"], s["shard"], s["state"]) for s in status["shards"]) == sorted(
        (g, s, "complete") for g in ("snac", "mimi", "units") for s in ("000001", "000002"))
    assert status["totals"]["complete"] == 2 and status["totals"]["problems"] == 0
    assert status["totals"]["errors"] == 3 * 3


def test_a_stage_added_to_a_finished_plan_runs_alone(together, acceptance_shards, models, tmp_path):
    out = tmp_path / "out"
    first = three_stages(models)[:1]
    run_audiomill("run", write_pipeline(tmp_path / "one.toml", acceptance_shards["paths"], out, first, **WINDOWS),
                  check=False)
    before = {n: os.stat(out / "snac" / n).st_mtime_ns for n in os.listdir(out / "snac")}
    trace = tmp_path / "decodes.txt"
    both = first + three_stages(models)[2:]
    result = run_audiomill("run", write_pipeline(tmp_path / "two.toml", acceptance_shards["paths"], out, both,
                                                 **WINDOWS), env={"AUDIOMILL_TRACE_DECODES": str(trace)})
    assert result.returncode == 3, result.stderr
    assert {n: os.stat(out / "snac" / n).st_mtime_ns for n in os.listdir(out / "snac")} == before
    assert group_files(out / "units") == group_files(together["out"] / "units")
    assert {line.split("\t")[1] for line in trace.read_text().splitlines()} == {"1"}  # decoded for units only
    # a changed stage is refused in one line, and nothing is written
    changed = [dict(both[0], **{"chunk-seconds": 20}), both[1]]
    refused = run_audiomill("run", write_pipeline(tmp_path / "three.toml", acceptance_shards["paths"], out, changed,
                                                  **WINDOWS))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"audiomill run: error: stage snac of {out} was made with --chunk-seconds 10.0, not 20.0: use another "
        f"--out, or the same --chunk-seconds"]


@pytest.fixture(scope="module")
def uninterrupted(together, acceptance_shards, models, tmp_path_factory):
    """The three-stage run in each format, uninterrupted: by format, its output folder."""
    runs = {"jsonl": together["out"]}

    def run(fmt: str):
        if fmt not in runs:
            folder = tmp_path_factory.mktemp(f"uninterrupted-{fmt}")
            pipeline = write_pipeline(folder / "pipeline.toml", acceptance_shards["paths"], folder / "out",
                                      three_stages(models), fmt, **WINDOWS)
            assert run_audiomill("run", pipeline).returncode == 3
            runs[fmt] = folder / "out"
        return runs[fmt]

    return run


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])  # jsonl.gz: tests/sinks/test_rotated.py kills it
def test_killed_at_random_moments_the_pipeline_resumes_to_identical_output(fmt, together, uninterrupted,
                                                                           acceptance_shards, models, tmp_path):
    reference = uninterrupted(fmt)
    expected = {name: group_files(reference / name) for name in ("snac", "mimi", "units")}
    out = tmp_path / "out"
    pipeline = write_pipeline(tmp_path / "pipeline.toml", acceptance_shards["paths"], out, three_stages(models),
                              fmt, **WINDOWS)
    rng = random.Random(fmt)
    rounds = 2 if fmt == "jsonl" else 1  # the sinks share the journal and finishing: one kill each for the others
    kills = 0
    for _ in range(rounds):
        # a random moment counted in progress, not in seconds: once this launch has journaled 1 to 4 more
        # records (a machine's speed moves start-up and the long file's encoding, and records come in
        # bursts: a moment in seconds could fall after the run)
        target = journaled(out) + rng.randint(1, 4)
        process = subprocess.Popen([sys.executable, "-m", "audiomill", "run", pipeline], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.time() + 4 * together["seconds"] + 60
        while process.poll() is None and journaled(out) < target and time.time() < deadline:
            time.sleep(0.005)
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    assert kills == rounds, "the run finished before it could be killed: the test proves nothing"
    assert run_audiomill("run", pipeline).returncode == 3
    for name in ("snac", "mimi", "units"):
        assert group_files(out / name) == expected[name], name
        assert set(group_files(out / name)) == {f"00000{i}.{fmt}" for i in (1, 2)} | {"000001.errors.jsonl"}
    assert not [n for _, _, files in os.walk(out) for n in files if n.endswith((".partial", ".tmp"))]


def test_parquet_loads_with_pyarrow_and_datasets_and_holds_the_jsonl_codes(together, uninterrupted, tmp_path):
    import datasets
    import pyarrow.parquet as pq

    out = uninterrupted("parquet")
    for name in ("snac", "mimi", "units"):
        files = [str(out / name / f"00000{i}.parquet") for i in (1, 2)]
        tables = [pq.read_table(f) for f in files]
        assert tables[0].schema.equals(tables[1].schema)
        assert str(tables[0].schema.field("tokens").type) == "list<element: list<element: int16>>"  # codebook < 2**15
        loaded = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
        # the folder is a dataset: its card names each stage's files as a config
        whole = datasets.load_dataset(str(out), name, split="train", cache_dir=str(tmp_path / "hf-card"))
        assert whole["key"] == loaded["key"] and whole["tokens"] == loaded["tokens"]
        jsonl = [json.loads(line) for i in (1, 2) for line in open(together["out"] / name / f"00000{i}.jsonl")]
        assert loaded["key"] == [r["key"] for r in jsonl]
        assert loaded["tokens"] == [r["tokens"] for r in jsonl]
        assert loaded["num_samples"] == [r["num_samples"] for r in jsonl]
        assert loaded["text"] == [r.get("text") for r in jsonl]
