"""Hugging Face datasets as inputs: save_to_disk folders, Parquet and Arrow files with an Audio column.

The fixtures are written as datasets writes them (the Audio feature's ``{bytes, path}`` struct and its
feature metadata), by pyarrow and by ``datasets`` itself, from real espeak-ng speech in several formats
and sample rates, with one row of broken audio bytes. Each goes through ``audiomill tokenize`` and
must give the records of the same audio given as a folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from audiomill.cli import main
from audiomill.corpus import SENTENCES, encode_audio, speak

pytest.importorskip("datasets")

CLIPS = [("mp3", 44100), ("flac", 48000), ("wav", 16000), ("ogg", 22050), ("mp3", 24000), ("flac", 16000)]
BROKEN = 3  # the row whose audio bytes are not audio


def run_cli(args: list[str]) -> tuple[int, str]:
    """audiomill in a process of its own, offline: (exit status, stderr)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": args[args.index("--out") + 1] + ".hf-home"}
    done = subprocess.run([sys.executable, "-m", "audiomill", *args], capture_output=True, text=True, timeout=120,
                          env=env)
    return done.returncode, done.stderr


def _audio_table(rows: list[dict]):
    import pyarrow as pa
    from datasets import Audio, Features, Value

    features = Features({"id": Value("string"), "audio": Audio(decode=False), "sentence": Value("string"),
                         "client": Value("string"), "up_votes": Value("int64")})
    audio = pa.array([{"bytes": r["bytes"], "path": r["path"]} for r in rows],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"id": [r["id"] for r in rows], "audio": audio, "sentence": [r["sentence"] for r in rows],
                      "client": [r["client"] for r in rows], "up_votes": [r["up_votes"] for r in rows]})
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features.to_dict()}})})


@pytest.fixture(scope="session")
def speech_rows(tmp_path_factory) -> dict:
    """Rows of real speech (and one broken), the same clips as a folder, and each kind of dataset file."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soxr

    root = tmp_path_factory.mktemp("hf")
    folder = root / "clips"
    folder.mkdir()
    rows = []
    for number, (extension, rate) in enumerate(CLIPS):
        samples, source_rate = speak(SENTENCES[number % len(SENTENCES)])
        samples = soxr.resample(samples, source_rate, rate) if rate != source_rate else samples
        data = encode_audio(samples, rate, extension)
        ident = f"utt{number}"
        if number == BROKEN:
            data = b"\xff\xfb broken mp3 frames " * 40
        else:
            (folder / f"{ident}.{extension}").write_bytes(data)
        rows.append({"id": ident, "bytes": data, "path": f"{ident}.{extension}",
                     "sentence": SENTENCES[number % len(SENTENCES)], "client": f"speaker{number % 2}",
                     "up_votes": number})
    table = _audio_table(rows)
    saved = root / "saved"
    dataset = datasets.Dataset(table)
    datasets.DatasetDict({"train": dataset, "test": dataset.select(range(2))}).save_to_disk(str(saved), num_shards={
        "train": 2, "test": 1})
    parquet = root / "rows.parquet"
    pq.write_table(table, parquet, row_group_size=2)
    arrow = root / "rows.arrow"
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:  # IPC file format
        writer.write_table(table, max_chunksize=4)
    return {"rows": rows, "folder": str(folder), "saved": str(saved), "parquet": str(parquet), "arrow": str(arrow)}


@pytest.fixture(scope="session")
def folder_records(speech_rows, tiny_snac, tmp_path_factory) -> dict:
    out = str(tmp_path_factory.mktemp("folder-run") / "out")
    assert main(["tokenize", speech_rows["folder"], "--out", out, "--model-path", tiny_snac, "--progress", "none"]) == 0
    with open(os.path.join(out, "clips-00000.jsonl")) as handle:
        return {r["key"]: r for r in map(json.loads, handle)}


def _records(out: str) -> tuple[dict, dict]:
    records, errors = {}, {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".jsonl"):
            with open(os.path.join(out, name)) as handle:
                found = {r["key"]: r for r in map(json.loads, handle)}
            (errors if name.endswith(".errors.jsonl") else records).update(found)
    return records, errors


@pytest.mark.parametrize("kind", ["saved", "parquet", "arrow"])
def test_each_kind_of_dataset_gives_the_records_of_the_same_audio_as_a_folder(kind, speech_rows, folder_records,
                                                                               tiny_snac, tmp_path):
    """save_to_disk (a split of a dataset dict, over two Arrow stream files), Parquet (row groups of 2)
    and an Arrow IPC file: codes equal the folder's, the text, speaker and other columns are metadata,
    the constants are added, the broken row is an error record, and shards of 4 rows span files."""
    spec = {"saved": f"hf:{speech_rows['saved']}:train", "parquet": f"hf:{speech_rows['parquet']}",
            "arrow": f"hf:{speech_rows['arrow']}"}[kind]
    out = str(tmp_path / "out")
    assert main(["tokenize", spec, "--out", out, "--model-path", tiny_snac, "--id-column", "id", "--text-column",
                 "sentence", "--speaker-column", "client", "--add", "lang=en", "--add", "corpus=test",
                 "--files-per-shard", "4", "--progress", "none"]) == 3
    records, errors = _records(out)
    stem = {"saved": "saved-train", "parquet": "rows", "arrow": "rows"}[kind]
    assert sorted(n for n in os.listdir(out) if n.endswith(".jsonl") and "errors" not in n) == \
        [f"{stem}-00000.jsonl", f"{stem}-00001.jsonl"]
    broken = speech_rows["rows"][BROKEN]["id"]
    assert list(errors) == [broken] and sorted(records) == sorted(folder_records)
    for key, record in records.items():
        row = next(r for r in speech_rows["rows"] if r["id"] == key)
        expected = folder_records[key]
        assert record["tokens"] == expected["tokens"] and record["num_samples"] == expected["num_samples"]
        assert (record["text"], record["speaker"], record["up_votes"]) == (row["sentence"], row["client"],
                                                                           row["up_votes"])
        assert (record["lang"], record["corpus"]) == ("en", "test")
        assert "id" not in record and "audio" not in record and "sentence" not in record
    assert len({json.dumps(r["tokens"]) for r in records.values()}) == len(records)  # the codes vary
    if kind != "saved":
        return
    # the output is a dataset: its card's default config loads the complete shards, not the errors
    import datasets

    loaded = datasets.load_dataset(out, split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded["key"] == [r["key"] for r in sorted(records.values(), key=lambda r: int(r["key"][3:]))]
    assert loaded["tokens"] == [records[key]["tokens"] for key in loaded["key"]]
    assert loaded["text"] == [records[key]["text"] for key in loaded["key"]]
    # push --dry-run: the card and the complete shards' files, nothing half written, no state
    with open(os.path.join(out, f"{stem}-00001.jsonl.partial"), "w") as handle:
        handle.write('{"key": "half"')
    done = subprocess.run([sys.executable, "-m", "audiomill", "push", out, "--repo", "me/cv-snac", "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["README.md", f"{stem}-00000.jsonl", f"{stem}-00000.errors.jsonl",
                                        f"{stem}-00001.jsonl"]


def test_row_index_is_the_key_without_an_id_column_and_bad_columns_fail_in_one_line(speech_rows, tiny_snac, tmp_path):
    from audiomill.items import Shard
    from audiomill.sources import read_shard
    from audiomill.sources.discover import discover_shards

    shards = discover_shards([f"hf:{speech_rows['parquet']}"], files_per_shard=4)
    assert [(s.name, s.start, s.count) for s in shards] == [("rows-00000", 0, 4), ("rows-00001", 4, 2)]
    assert Shard.from_json(json.loads(json.dumps(shards[1].to_json()))) == shards[1]
    items = [item for shard in shards for item in read_shard(shard)]
    assert [i.key for i in items] == [str(n) for n in range(len(CLIPS))]
    assert [i.data for i in items] == [r["bytes"] for r in speech_rows["rows"]]
    assert items[0].meta == {"id": "utt0", "sentence": SENTENCES[0], "client": "speaker0", "up_votes": 0}
    cases = [(f"hf:{speech_rows['parquet']}", ["--text-column", "transcript"],
              "no column 'transcript' for --text-column; its columns: id, audio, sentence, client, up_votes"),
             (f"hf:{speech_rows['parquet']}", ["--audio-column", "up_votes"], "column 'up_votes' is int64, not audio"),
             (f"hf:{speech_rows['saved']}:validation", [], "no split 'validation'; its splits: train, test"),
             (f"hf:{tmp_path}/nowhere", [], "no such file or folder"),
             ("hf:someone/not-cached:en:train", [], "hf:someone/not-cached:en:train: cannot load someone/not-cached "
                                                   "(HF_HUB_OFFLINE is set: only the local cache is searched)")]
    for spec, args, message in cases:
        out = str(tmp_path / "bad")
        code, stderr = run_cli(["tokenize", spec, "--out", out, "--model-path", tiny_snac, *args])
        assert code == 1 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not os.path.exists(out)


def test_two_datasets_of_one_name_and_one_given_twice_write_distinct_shards(speech_rows, tiny_snac, tmp_path):
    """Two save_to_disk folders both named 'corpus' (the SNAC pipeline overwrote one with the other) and
    one of them given twice: each dataset gets its own shards, read once, and nothing is overwritten."""
    import datasets
    import pyarrow.parquet as pq

    table = pq.read_table(speech_rows["parquet"])
    first, second = tmp_path / "a" / "corpus", tmp_path / "b" / "corpus"
    datasets.Dataset(table.slice(0, 3)).save_to_disk(str(first))
    datasets.Dataset(table.slice(4, 2)).save_to_disk(str(second))
    out = str(tmp_path / "out")
    args = [f"hf:{first}", f"hf:{second}", f"hf:{first}", "--out", out, "--model-path", tiny_snac, "--id-column", "id",
            "--progress", "none"]
    assert main(["tokenize", *args]) == 0
    names = sorted(n for n in os.listdir(out) if n.endswith(".jsonl"))
    assert len(names) == 2 and "corpus-00000.jsonl" in names
    keys = {}
    for name in names:
        with open(os.path.join(out, name)) as handle:
            keys[name] = [r["key"] for r in map(json.loads, handle)]
    assert keys["corpus-00000.jsonl"] == ["utt0", "utt1", "utt2"]
    [other] = [n for n in names if n != "corpus-00000.jsonl"]
    assert keys[other] == ["utt4", "utt5"] and other.startswith("corpus-")
    assert main(["tokenize", *args]) == 0  # a rerun: the same shards, complete


def _hub_cache(home: str, repo: str, parquet: str) -> None:
    """``repo`` in a datasets cache under ``home``, laid out as a download of it leaves it
    (``<namespace>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow``)."""
    import glob
    import shutil

    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo.split("/")
    cache = os.path.join(home, "datasets")
    Parquet(cache_dir=cache, dataset_name=name, data_files={"train": parquet}, hash="0123abcd",
            config_name="default").download_and_prepare()
    [prepared] = glob.glob(os.path.join(cache, name, "default-*"))
    os.makedirs(os.path.join(cache, f"{namespace}___{name}"))
    shutil.move(prepared, os.path.join(cache, f"{namespace}___{name}", "default"))


def test_a_hub_id_is_read_from_the_local_cache_offline(speech_rows, folder_records, tiny_snac, tmp_path):
    home = str(tmp_path / "hf-home")
    _hub_cache(home, "someone/speech", speech_rows["parquet"])
    out = str(tmp_path / "out")
    done = subprocess.run([sys.executable, "-m", "audiomill", "tokenize", "hf:someone/speech:default:train", "--out",
                           out, "--model-path", tiny_snac, "--id-column", "id", "--progress", "none"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HOME": home, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 3, done.stderr
    records, errors = _records(out)
    assert sorted(os.listdir(out))[0] == "README.md" and "someone__speech-default-train-00000.jsonl" in os.listdir(out)
    assert list(errors) == [speech_rows["rows"][BROKEN]["id"]]
    assert {k: r["tokens"] for k, r in records.items()} == {k: r["tokens"] for k, r in folder_records.items()}
