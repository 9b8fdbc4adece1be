"""Folders and manifests listed once into the plan: shards read from the listing, never shifted."""

from __future__ import annotations

import json

from audiomill.sources import listing, read_shard
from audiomill.sources.discover import discover_shards


def make_folder(root, names: list[str]) -> None:
    for rel in names:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def summary(shards) -> list[tuple]:
    return [(s.name, s.kind, s.start, s.count) for s in shards]


def test_a_planned_folder_reads_its_shards_from_the_listing_and_new_files_do_not_shift_them(tmp_path, monkeypatch,
                                                                                           caplog):
    monkeypatch.setattr(listing, "CHUNK", 3)  # the external sort spills and merges several chunks
    root = tmp_path / "corpus"
    names = [f"s{i % 4}/f{i:03d}.wav" for i in range(17)] + ["top.mp3", "a b/ü\nnewline.flac", "notes.txt"]
    make_folder(root, names)
    plan = tmp_path / "listing"
    plan.mkdir()
    planned = discover_shards([str(root)], files_per_shard=5, listing_dir=str(plan))
    walked = discover_shards([str(root)], files_per_shard=5)
    assert summary(planned) == summary(walked) == [(f"corpus-0000{i}", "dir", 5 * i, 5 if i < 3 else 4)
                                                   for i in range(4)]
    audio = sorted(n for n in names if not n.endswith(".txt"))
    assert [json.loads(line) for line in open(plan / "corpus.files.jsonl", encoding="utf-8")] == audio
    keys = [[i.key for i in read_shard(s)] for s in planned]
    assert keys == [[i.key for i in read_shard(s)] for s in walked]
    assert sum(keys, []) == [n.rsplit(".", 1)[0] for n in audio]
    assert not caplog.records
    make_folder(root, ["s0/a-new-file.wav"])  # sorts into the first shard of a fresh walk
    (root / "top.mp3").unlink()
    again = discover_shards([str(root)], files_per_shard=5, listing_dir=str(plan))
    assert again == planned
    assert [[i.key for i in read_shard(s)] for s in again] == keys  # top.mp3 is still there: an error when decoded
    assert [r.getMessage() for r in caplog.records] == [
        f"1 audio file(s) were added to {root} after its plan was made (such as s0/a-new-file.wav): the plan's "
        f"shards stay as they were, so they are not in this run; tokenize them into another --out",
        f"1 audio file(s) of the plan are gone from {root}: they become error records"]


def test_a_planned_manifest_is_a_copy_read_from_each_shards_offset(tmp_path):
    manifest = tmp_path / "train.jsonl"
    lines = [json.dumps({"path": f"a/{i}.wav", "text": f"t{i}"}) for i in range(7)]
    manifest.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\nnot json\n")
    plan = tmp_path / "listing"
    plan.mkdir()
    planned = discover_shards([str(manifest)], files_per_shard=3, listing_dir=str(plan))
    walked = discover_shards([str(manifest)], files_per_shard=3)
    assert summary(planned) == summary(walked) == [("train-00000", "manifest", 0, 3), ("train-00001", "manifest", 3, 3),
                                                   ("train-00002", "manifest", 6, 2)]
    read = [[(i.key, i.path, i.meta, i.error) for i in read_shard(s)] for s in planned]
    assert read == [[(i.key, i.path, i.meta, i.error) for i in read_shard(s)] for s in walked]
    assert read[2][1][0] == "line9"  # the key of a broken line still names its line in the manifest
    manifest.write_text("\n".join(reversed(lines)) + "\n")  # the manifest changes after planning
    assert [[i.key for i in read_shard(s)] for s in planned] == [[k for k, *_ in shard] for shard in read]
