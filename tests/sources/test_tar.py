from __future__ import annotations

import json

import pytest

from audiomill.corpus import write_tar
from audiomill.items import Shard, SourceDamage
from audiomill.sources import read_shard
from audiomill.sources.tar import sample_key


def tar_shard(tmp_path, members) -> Shard:
    path = str(tmp_path / "000007.tar")
    write_tar(path, members)
    return Shard("000007", "tar", path)


def test_members_sharing_a_key_form_one_item_with_sidecar_metadata(tmp_path):
    shard = tar_shard(tmp_path, [
        ("d/x.json", json.dumps({"speaker": "s1"}).encode()),
        ("d/x.mp3", b"AUDIO-X"),
        ("d/x.txt", b"hello there\n"),
        ("d/y.flac", b"AUDIO-Y"),
    ])
    items = list(read_shard(shard))
    assert [(i.key, i.audio_file, i.index) for i in items] == [("d/x", "d/x.mp3", 0), ("d/y", "d/y.flac", 1)]
    assert items[0].data == b"AUDIO-X" and items[0].meta == {"speaker": "s1", "txt": "hello there"}
    assert items[1].meta == {} and items[0].source == shard.path


def test_key_is_the_path_up_to_the_first_dot_of_the_name():
    assert sample_key("a.b/c.d.mp3") == ("a.b/c", "d.mp3")
    assert sample_key("plain") == ("plain", "")


def test_several_audio_members_of_one_sample_become_separate_items(tmp_path):
    shard = tar_shard(tmp_path, [("s.left.wav", b"L"), ("s.right.wav", b"R"), ("s.json", b'{"a": 1}')])
    items = list(read_shard(shard))
    assert [(i.key, i.data, i.meta) for i in items] == [("s.left", b"L", {"a": 1}), ("s.right", b"R", {"a": 1})]


def test_unwanted_items_are_yielded_as_skipped_without_their_audio(tmp_path):
    shard = tar_shard(tmp_path, [("a.wav", b"A"), ("b.wav", b"B"), ("c.wav", b"C")])
    items = list(read_shard(shard, want=lambda key: key != "b"))
    assert [(i.key, i.skipped, i.data) for i in items] == [("a", False, b"A"), ("b", True, None), ("c", False, b"C")]


def test_escaping_and_absolute_names_are_error_items(tmp_path):
    shard = tar_shard(tmp_path, [("../evil.mp3", b"E"), ("/etc/abs.mp3", b"F"), ("ok/../../up.wav", b"G")])
    items = list(read_shard(shard))
    assert all(i.error and "unsafe member name" in i.error and i.data is None for i in items)


def test_a_repeated_key_is_an_error_item(tmp_path):
    shard = tar_shard(tmp_path, [("a.wav", b"1"), ("b.wav", b"2"), ("a.wav", b"3")])
    items = list(read_shard(shard))
    assert [i.error is None for i in items] == [True, True, False]
    assert "duplicate key 'a'" in items[2].error and items[2].key != "a"


def test_a_file_that_is_not_a_tar_is_damage_not_a_crash(tmp_path):
    path = tmp_path / "bad.tar"
    path.write_bytes(b"\x00garbage" * 100 + b"x")
    (damage,) = list(read_shard(Shard("bad", "tar", str(path))))
    assert isinstance(damage, SourceDamage) and damage.key == "@0" and damage.position == 0
    assert damage.reason == "a corrupt header at byte 0, and no valid header after it: the rest of the archive " \
                            "(801 bytes) is lost"


def test_a_truncated_archive_yields_what_it_holds_then_the_cut(tmp_path):
    full = tar_shard(tmp_path, [("a.wav", b"A" * 5000), ("b.wav", b"B" * 5000), ("c.wav", b"C" * 5000)])
    data = open(full.path, "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:7000])
    first, damage = list(read_shard(Shard("cut", "tar", str(cut))))
    assert first.key == "a" and first.data == b"A" * 5000
    assert (damage.key, damage.audio_file, damage.position) == ("b", "b.wav", 7000)
    assert damage.reason == "the archive is cut off at byte 7000, inside member 'b.wav' (856 of its 5000 bytes)"


def test_a_large_member_of_a_plain_tar_is_decoded_in_place_not_read(tmp_path):
    import gzip

    import numpy as np

    from audiomill.audio import ByteRange, decode
    from audiomill.corpus import encode_audio, speech
    from audiomill.runner.decode import task_source
    from audiomill.sources.tar import IN_PLACE_BYTES

    samples, rate = speech(100.0)
    small = encode_audio(samples[: rate * 5], rate, "wav")
    big = encode_audio(samples, rate, "wav")  # 16 kHz WAV: 3.2 MB per 100 s
    while len(big) <= IN_PLACE_BYTES:
        samples = np.concatenate([samples, samples])
        big = encode_audio(samples, rate, "wav")
    shard = tar_shard(tmp_path, [("long/talk.wav", big), ("long/talk.json", b'{"text": "t"}'), ("x.wav", small)])
    items = list(read_shard(shard))
    assert items[0].data is None and items[0].member_range is not None
    assert items[0].meta == {"text": "t"}
    assert isinstance(task_source(items[0]), ByteRange)
    np.testing.assert_array_equal(decode(task_source(items[0]), 24000).samples, decode(big, 24000).samples)
    assert items[1].data == small  # small members are read as before

    packed = tmp_path / "packed.tar.gz"  # a compressed archive cannot be read in place
    packed.write_bytes(gzip.compress(open(shard.path, "rb").read()))
    items = list(read_shard(Shard("packed", "tar", str(packed))))
    assert items[0].data == big and items[0].member_range is None
