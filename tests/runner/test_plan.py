"""The plan as a type: plan.json read into a ``Plan`` and written back unchanged, its format as
(name, lines per file), and a folder whose plan predates named stages resuming through it."""

import json
import shutil

import pytest

from audiomill.errors import UsageError
from audiomill.runner.state import OutputFolder, Plan
from audiomill.sinks import OutputFormat, get_format
from tests.conftest import run_audiomill


@pytest.fixture(scope="module")
def planned(acceptance_shards, tiny_snac, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "out"
    args = ["tokenize", acceptance_shards["paths"][1], "--out", str(out), "--model-path", tiny_snac,
            "--lines-per-file", "2"]
    run_audiomill(*args, check=True)
    return out, args


def test_a_plan_reads_into_its_type_and_writes_back_the_same_json(planned):
    out, _ = planned
    text = (out / "_audiomill" / "plan.json").read_text()
    written = json.loads(text)
    plan = OutputFolder(str(out)).plan()
    assert plan.format == OutputFormat("jsonl", 2) and written["format"] == "jsonl@2"
    assert plan.config.format == "jsonl" and plan.config.lines_per_file == 2
    assert [(o.group, o.kind) for o in plan.outputs] == [("", "tokenize")]
    assert plan.settings("")["codec"] == "snac-24khz" and plan.groups() == [""]
    assert [s.name for s in plan.shards] == ["000002"]
    assert json.dumps(plan.to_json(), indent=1, sort_keys=True) + "\n" == text  # as write_plan writes it


def test_the_plan_is_parsed_once_until_its_file_is_replaced(planned, tmp_path):
    out, _ = planned
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    folder = OutputFolder(str(copy))
    first = folder.plan()
    assert folder.plan() is first
    folder.write_plan(first)
    assert folder.plan() is not first and folder.plan() == first


def test_a_format_with_lines_per_file_is_named_and_parsed_one_way():
    assert OutputFormat.parse("parquet@500") == ("parquet", 500)
    assert str(OutputFormat("parquet", 500)) == "parquet@500" and str(OutputFormat("wds")) == "wds"
    assert get_format(OutputFormat("jsonl", 3)).name == "jsonl@3"
    for bad in ("jsonl@0", "jsonl@x"):
        with pytest.raises(UsageError, match="--lines-per-file"):
            OutputFormat.parse(bad)


def test_a_folder_planned_before_stages_were_named_resumes(planned, tmp_path):
    """Plans of before named stages had no ``outputs``: the tokenize settings were in ``config`` and the
    weights at the top. Such a folder resumes with nothing done again, and its plan gains its stage."""
    out, args = planned
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    path = copy / "_audiomill" / "plan.json"
    plan = json.loads(path.read_text().replace(str(out), str(copy)))
    stage = plan.pop("outputs")[0]
    settings = dict(stage["settings"])
    plan["weights"] = settings.pop("weights")
    plan["config"].update(settings)
    path.write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n")
    before = {p.name: p.read_bytes() for p in copy.glob("000002*")}
    assert before
    again = run_audiomill(*[str(copy) if a == str(out) else a for a in args])
    assert again.returncode == 0, again.stderr
    assert "1 already were" in again.stderr
    assert {p.name: p.read_bytes() for p in copy.glob("000002*")} == before
    assert json.loads(path.read_text())["outputs"] == [stage]
