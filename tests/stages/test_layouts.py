"""--layout: SNAC codes in the fields the SNAC pipeline and Orpheus-TTS read, checked against decodings
of those layouts written here from their public descriptions, and read back by resynth."""

from __future__ import annotations

import pytest

from tests.conftest import read_jsonl, run_audiomill
from tests.test_pipeline import write_pipeline


def orpheus_to_snac(codes_list: list[int]) -> list[list[int]]:
    """Orpheus-TTS' description: 7 tokens a frame, token p offset by 128266 + p * 4096; positions 0 -> level 0,
    1 and 4 -> level 1, 2, 3, 5 and 6 -> level 2."""
    assert len(codes_list) % 7 == 0
    plain = [code - 128266 for code in codes_list]
    first, second, third = [], [], []
    for j in range(len(plain) // 7):
        group = plain[7 * j : 7 * j + 7]
        first.append(group[0])
        second += [group[1] - 4096, group[4] - 4 * 4096]
        third += [group[2] - 2 * 4096, group[3] - 3 * 4096, group[5] - 5 * 4096, group[6] - 6 * 4096]
    return [first, second, third]


@pytest.fixture(scope="module")
def laid_out(acceptance_shards, tiny_snac, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("layouts")
    stages = [{"name": "plain", "codec": "snac-24khz", "model-path": tiny_snac},
              {"name": "orpheus", "codec": "snac-24khz", "model-path": tiny_snac, "layout": "orpheus"},
              {"name": "layers", "codec": "snac-24khz", "model-path": tiny_snac, "layout": "snac-layers"}]
    pipeline = write_pipeline(folder / "layouts.toml", [acceptance_shards["paths"][1]], folder / "out", stages)
    run_audiomill("run", pipeline, check=True)
    return {name: read_jsonl(folder / "out" / name / "000002.jsonl") for name in ("plain", "orpheus", "layers")} | {
        "out": folder / "out"}


def test_each_layout_decodes_by_its_own_description_to_the_plain_codes(laid_out):
    plain, orpheus, layers = laid_out["plain"], laid_out["orpheus"], laid_out["layers"]
    assert [r["key"] for r in plain] == [r["key"] for r in orpheus] == [r["key"] for r in layers] and len(plain) == 4
    for base, o, s in zip(plain, orpheus, layers):
        assert "tokens" not in o and "tokens" not in s and "token_shape" not in o
        assert orpheus_to_snac(o["codes_list"]) == base["tokens"]
        assert all(128266 <= code < 128266 + 7 * 4096 for code in o["codes_list"])
        assert len(o["codes_list"]) == 7 * len(base["tokens"][0])
        assert s["num_layers"] == 3 and s["token_lengths"] == [len(level) for level in base["tokens"]]
        assert [s[f"snac_layer_{n}"] for n in (1, 2, 3)] == base["tokens"]
        for record in (o, s):  # everything else as the plain record
            assert {k: v for k, v in record.items() if k not in ("codes_list", "snac_layer_1", "snac_layer_2",
                                                                 "snac_layer_3", "num_layers", "token_lengths")} == \
                {k: v for k, v in base.items() if k not in ("tokens", "token_shape")}
    assert len({tuple(r["codes_list"][:14]) for r in orpheus}) == len(orpheus)  # the codes vary


def test_resynth_reads_every_layout_and_a_layout_a_codec_cannot_hold_is_refused(laid_out, tmp_path, tiny_snac,
                                                                                 acceptance_shards):
    wavs = {}
    for name in ("plain", "orpheus", "layers"):
        folder = tmp_path / name
        run_audiomill("resynth", str(laid_out["out"] / name / "000002.jsonl"), "--wav-dir", str(folder),
                      "--model-path", tiny_snac, check=True)
        wavs[name] = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.wav"))}
    # (SNAC's decoder adds noise of its own, so the samples differ from run to run: the files and their lengths
    # must not, and the codes resynth decodes are each record's own)
    heads = {name: {file: data[:44] for file, data in found.items()} for name, found in wavs.items()}
    assert heads["plain"] and heads["orpheus"] == heads["plain"] and heads["layers"] == heads["plain"]
    from audiomill.layouts import tokens_of

    for base, o, s in zip(laid_out["plain"], laid_out["orpheus"], laid_out["layers"]):
        assert tokens_of(o) == tokens_of(s) == tokens_of(base) == base["tokens"]
    refused = run_audiomill("tokenize", acceptance_shards["paths"][1], "--out", str(tmp_path / "mimi"), "--codec",
                            "mimi", "--random-weights", "--layout", "orpheus")
    assert refused.returncode == 1 and "--layout orpheus holds SNAC 24 kHz codes" in refused.stderr
    assert not (tmp_path / "mimi").exists()
