from __future__ import annotations

import json

from audiomill.items import Shard
from audiomill.sources import read_shard
from audiomill.sources.discover import discover_shards


def test_a_folder_is_searched_recursively_and_sliced_into_shards(tmp_path):
    root = tmp_path / "corpus"
    for rel in ["b/2.wav", "a/1.mp3", "a/deep/3.flac", "notes.txt", "c/4.ogg", ".hidden/5.wav"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "a" / "1.json").write_text(json.dumps({"text": "one"}))
    shards = discover_shards([str(root)], files_per_shard=3)
    assert [(s.name, s.kind, s.start, s.count) for s in shards] == [("corpus-00000", "dir", 0, 3),
                                                                     ("corpus-00001", "dir", 3, 1)]
    items = [i for s in shards for i in read_shard(s)]
    assert [i.key for i in items] == ["a/1", "a/deep/3", "b/2", "c/4"]
    assert items[0].meta == {"text": "one"} and items[0].path == str(root / "a" / "1.mp3")


def test_manifest_lines_resolve_relative_paths_and_keep_fields(tmp_path):
    (tmp_path / "audio").mkdir()
    lines = [
        {"audio_filepath": "audio/x.wav", "text": "hi", "duration": 1.5},
        {"audio": "/abs/y.flac", "id": "utt-y"},
        {"path": "audio/z.mp3", "offset": 2.0, "duration": 1.0},
        {"nothing": "here"},
    ]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n\nnot json\n")
    shards = discover_shards([str(manifest)], files_per_shard=10)
    assert [(s.name, s.kind, s.count) for s in shards] == [("train-00000", "manifest", 5)]
    items = list(read_shard(shards[0]))
    assert [i.key for i in items] == ["audio/x", "utt-y", "audio/z@2.0", "line4", "line6"]
    assert items[0].path == str(tmp_path / "audio" / "x.wav") and items[0].meta == {"text": "hi", "duration": 1.5}
    assert items[0].offset is None and items[0].duration is None
    assert items[1].path == "/abs/y.flac"
    assert (items[2].offset, items[2].duration) == (2.0, 1.0)
    assert "none of the fields" in items[3].error
    assert "not valid JSON" in items[4].error


def test_manifest_slices_cover_every_line_once(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"{n}.wav"}) + "\n" for n in range(7)))
    shards = discover_shards([str(manifest)], files_per_shard=3)
    keys = [i.key for s in shards for i in read_shard(s)]
    assert keys == [str(n) for n in range(7)] and len(shards) == 3


def test_folder_of_tars_gives_one_shard_per_archive_and_collisions_are_refused(tmp_path):
    import pytest

    from audiomill.corpus import write_tar
    from audiomill.errors import UsageError

    for folder in ("en", "fr"):
        (tmp_path / folder).mkdir()
        write_tar(str(tmp_path / folder / "000001.tar"), [])
    assert [s.name for s in discover_shards([str(tmp_path / "en")])] == ["000001"]
    with pytest.raises(UsageError, match="same output '000001'"):
        discover_shards([str(tmp_path / "en"), str(tmp_path / "fr")])
    assert Shard.from_json(discover_shards([str(tmp_path / "en")])[0].to_json()).kind == "tar"
