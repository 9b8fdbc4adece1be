"""The outputs of today's commands, kept as digests: a change to how the code is organised must not change
a single byte that a command writes.

One work folder holds a small corpus (espeak-ng speech as FLAC and WAV, in a tar shard and a folder), a tiny
SNAC, a tiny IndexTTS2 release and a SentencePiece model; the commands run there with paths relative to it:
tokenize (jsonl and parquet), vad with its CSV and manifest, transcribe with pocketsphinx, prepare-tts and a
three-stage ``run``. Every file they write is hashed (text with the work folder's path replaced, Parquet by its
schema, metadata and rows; the plan by what says what the output is), and compared with
``tests/golden/outputs.json``.

The digests were made by the code of commit a562431 (before stage kinds owned their settings). To make them
again on another machine, whose arithmetic may round differently, run this file with that commit's code:
``git worktree add /tmp/base a562431`` then
``AUDIOMILL_WRITE_GOLDEN=tests/golden/outputs.json PYTHONPATH=/tmp/base/src python -m pytest tests/test_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from audiomill.corpus import SENTENCES, encode_audio, speak, write_tar
from tests.conftest import run_audiomill
from tests.test_pipeline import write_pipeline

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "outputs.json")
SAID = (2, 3)  # sentences pocketsphinx gets word for word under a grammar of them (see test_transcribe)
SKIPPED = ("_audiomill/logs", "_audiomill/locks", "_audiomill/plan.lock", "_audiomill/listing")
RUN_WIDE = ("inputs", "out", "format", "files_per_shard", "lines_per_file", "extensions", "audio_column",
            "text_column", "speaker_column", "id_column", "add")


def words(text: str) -> str:
    import re

    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def _corpus(work: str) -> None:
    os.makedirs(os.path.join(work, "folder"))
    members = []
    for number in range(4):
        samples, rate = speak(SENTENCES[number])
        extension = ("flac", "wav")[number % 2]
        members.append((f"c/u{number}.{extension}", encode_audio(samples, rate, extension)))
        members.append((f"c/u{number}.json", json.dumps({"text": SENTENCES[number]}).encode()))
    members.append(("c/bad.flac", b"not audio at all"))
    write_tar(os.path.join(work, "000001.tar"), members)
    for number, index in enumerate(SAID * 2):
        samples, rate = speak(SENTENCES[index])
        extension = ("flac", "wav")[number % 2]
        with open(os.path.join(work, "folder", f"s{number}.{extension}"), "wb") as handle:
            handle.write(encode_audio(samples, rate, extension))
    with open(os.path.join(work, "said.jsgf"), "w") as handle:
        handle.write("#JSGF V1.0;\ngrammar said;\npublic <said> = "
                     + " | ".join(f"( {words(SENTENCES[i])} )" for i in SAID) + ";\n")


def _commands(work: str) -> dict[str, list[str]]:
    pipeline = write_pipeline(
        __import__("pathlib").Path(work) / "three.toml", ["000001.tar"], "run", [
            {"kind": "vad", "name": "vad", "segment": "1:8"},
            {"kind": "transcribe", "name": "asr", "backend": "pocketsphinx", "grammar": "said.jsgf"},
            {"kind": "tokenize", "name": "snac", "codec": "snac-24khz", "model-path": "snac"}])
    return {
        "tokenize-jsonl": ["tokenize", "000001.tar", "folder", "--out", "tokenize-jsonl", "--model-path", "snac"],
        "tokenize-parquet": ["tokenize", "000001.tar", "--out", "tokenize-parquet", "--model-path", "snac",
                             "--format", "parquet", "--layout", "snac-layers"],
        "vad": ["vad", "000001.tar", "folder", "--out", "vad", "--segment", "1:8", "--min-duration", "1.5"],
        "transcribe": ["transcribe", "folder", "--out", "transcribe", "--backend", "pocketsphinx",
                       "--grammar", "said.jsgf"],
        "prepare-tts": ["prepare-tts", "utterances/manifest.jsonl", "--tokenizer", "utterances/bpe.model",
                        "--language", "en", "--model-path", "release", "--val-ratio", "0.5", "--out", "prepare-tts"],
        "run": ["run", os.path.basename(pipeline)],
    }


def digest(path: str, work: str) -> str:
    """A file's digest: its bytes with ``work`` written as <WORK>; Parquet by schema, metadata and rows."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        text = json.dumps([str(table.schema), table.to_pylist()], sort_keys=True, default=str)
        data = text.encode()
    else:
        with open(path, "rb") as handle:
            data = handle.read()
    if path.endswith("_audiomill/plan.json"):
        plan = json.loads(data)
        config = {k: plan["config"].get(k) for k in RUN_WIDE}  # the rest of the config is the launch's
        data = json.dumps({"format": plan["format"], "outputs": plan["outputs"], "shards": plan["shards"],
                           "config": config}, sort_keys=True).encode()
    if "/_audiomill/done/" in path:  # when and where it finished, how long it took: the launch's
        # (and the size and hash of files that hold the work folder's path: the files are compared themselves)
        marker = {k: v for k, v in json.loads(data).items() if k not in ("finished", "host", "wall_seconds")}
        for value in marker.values():
            if isinstance(value, dict):
                value.pop("sha256", None), value.pop("bytes", None)
        data = json.dumps(marker, sort_keys=True).encode()
    return hashlib.sha256(data.replace(work.encode(), b"<WORK>")).hexdigest()


def tree_digests(out: str, work: str) -> dict[str, str]:
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, out)
            if relative.startswith(SKIPPED) or name.startswith("README.md.tmp"):
                continue
            found[relative] = digest(path, work)
    return dict(sorted(found.items()))


@pytest.fixture(scope="module")
def golden_work(tmp_path_factory, tiny_snac, release, utterances) -> dict:
    work = str(tmp_path_factory.mktemp("golden"))
    _corpus(work)
    shutil.copytree(tiny_snac, os.path.join(work, "snac"))
    shutil.copytree(release, os.path.join(work, "release"))
    folder = os.path.dirname(utterances["manifest"])
    shutil.copytree(folder, os.path.join(work, "utterances"))
    with open(utterances["manifest"], encoding="utf-8") as handle:  # its audio paths, relative to the work folder
        text = handle.read().replace(json.dumps(folder + "/")[1:-1], "")
    with open(os.path.join(work, "utterances", "manifest.jsonl"), "w", encoding="utf-8") as handle:
        handle.write(text)
    commands = _commands(work)
    codes = {}
    for name, args in commands.items():
        codes[name] = run_audiomill(*args, cwd=work).returncode
    trees = {name: tree_digests(os.path.join(work, name), work) for name in commands}
    return {"work": work, "codes": codes, "trees": trees, "commands": commands}


def test_every_file_today_s_commands_write_is_byte_for_byte_the_golden_one(golden_work):
    found = {"exit": golden_work["codes"], "trees": golden_work["trees"]}
    target = os.environ.get("AUDIOMILL_WRITE_GOLDEN")
    if target:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            json.dump(found, handle, indent=1, sort_keys=True)
            handle.write("\n")
        pytest.skip(f"wrote {target}")
    with open(GOLDEN, encoding="utf-8") as handle:
        golden = json.load(handle)
    assert found["exit"] == golden["exit"]
    for name, files in golden["trees"].items():
        mine = found["trees"][name]
        assert sorted(mine) == sorted(files), f"{name}: other files"
        changed = [path for path in files if mine[path] != files[path]]
        assert not changed, f"{name}: these files differ from the golden ones: {changed}"
