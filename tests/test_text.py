"""Text for TTS sets: IndexTTS2's cleaning rules, normalisation (a Ge'ez-script line, English numbers),
SentencePiece ids against sentencepiece's own encode, `audiomill train-tokenizer`, the text stage in a
pipeline (empty text an error record), and IndexTTS2's split rule on known ids."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from audiomill.corpus import SENTENCES, encode_audio, speak
from audiomill.text import clean, is_validation, normalise, split_value
from tests.conftest import read_jsonl, run_audiomill

AMHARIC = "ሰላም ለዓለም። ይህ የሙከራ ዓረፍተ ነገር ነው፣ እናመሰግናለን።"
ENGLISH = "speaker 3: On May 21st, 1,250 people paid $12.50\u00a0each \u2014 that\u2019s 35% more than 2023."


def test_cleaning_follows_indextts2s_rules():
    assert clean("  spk 12: hello\u3000world\xa0!  ") == "hello world !"
    assert clean("Speaker 1：你好") == "你好"  # a full-width colon too
    assert clean("a speaker 2: in the middle stays") == "a speaker 2: in the middle stays"
    assert clean("  \u3000 ") == ""


def test_normalisation_of_an_amharic_and_an_english_line():
    assert normalise(AMHARIC, "am") == AMHARIC  # NFC already; Ge'ez punctuation is kept as the script's own
    assert normalise("spk 1:  " + AMHARIC.replace(" ", "\u3000"), "am") == AMHARIC
    assert normalise(ENGLISH, "en") == ("On May twenty-first, one thousand two hundred fifty people paid twelve point "
                                        "five zero dollars each - that's thirty-five percent more than two thousand "
                                        "twenty-three.")
    assert normalise("2023 and 35%", "am") == "2023 and 35%"  # numbers are spelled for English only
    decomposed = "e\u0301"  # é as e + combining accent: NFC composes it
    assert normalise(decomposed, "fr") == "\u00e9"


def test_split_follows_the_hash_rule_on_known_ids():
    assert split_value("utt_000000") == 0.802852 and not is_validation("utt_000000", 0.01)
    for key in ("utt_000001", "a/b-0003", "ሰላም"):
        value = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 1_000_000 / 1e6
        assert split_value(key) == value and is_validation(key, 0.5) == (value < 0.5)
    assert is_validation("anything", 1.0) and not is_validation("anything", 0.0)


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory) -> dict:
    """Four utterances (audio and a manifest with text, Amharic and English), and a tokenizer trained on
    the manifest through the command line."""
    folder = tmp_path_factory.mktemp("text")
    rows = []
    texts = [ENGLISH, AMHARIC, "spk 2:   ", SENTENCES[0]]
    for number, text in enumerate(texts):
        samples, rate = speak(SENTENCES[number])
        path = folder / f"u{number}.flac"
        path.write_bytes(encode_audio(samples, rate, "flac"))
        rows.append({"audio_filepath": str(path), "id": f"utt_{number:06d}", "text": text,
                     "language": "am" if text == AMHARIC else "en"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows) + "not json\n")
    training = folder / "train.jsonl"
    lines = [ENGLISH, AMHARIC, *SENTENCES] * 3
    training.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in lines))
    model = folder / "bpe.model"
    result = run_audiomill("train-tokenizer", str(training), str(manifest), "--vocab-size", "120", "--out", str(model))
    assert result.returncode == 0, result.stderr
    assert "1 lines without text skipped" in result.stdout and "1 empty once cleaned" in result.stdout
    return {"manifest": str(manifest), "model": str(model), "rows": rows}


def test_text_stage_ids_equal_sentencepieces_encode_of_the_normalised_text(text_corpus, tmp_path):
    import sentencepiece

    pipeline = tmp_path / "text.toml"
    pipeline.write_text(f'inputs = ["{text_corpus["manifest"]}"]\nout = "{tmp_path / "out"}"\nformat = "parquet"\n\n'
                        f'[[stage]]\nkind = "text"\nname = "text"\ntokenizer = "{text_corpus["model"]}"\n')
    result = run_audiomill("run", str(pipeline))
    assert result.returncode == 3, result.stderr  # complete, with errors: the empty text and the bad line
    import pyarrow.parquet as pq

    records = pq.read_table(tmp_path / "out" / "text" / "manifest-00000.parquet").to_pylist()
    reference = sentencepiece.SentencePieceProcessor(model_file=text_corpus["model"])
    by_key = {r["key"]: r for r in records}
    assert sorted(by_key) == ["utt_000000", "utt_000001", "utt_000003"]
    for row in text_corpus["rows"]:
        if row["id"] not in by_key:
            continue
        record = by_key[row["id"]]
        expected = normalise(row["text"], row["language"])
        assert record["text"] == expected and record["language"] == row["language"]
        assert record["text_ids"] == reference.encode(expected, out_type=int) and record["text_len"] == len(
            record["text_ids"])
        assert json.loads(record["meta_json"])["meta"]["text"] == row["text"]  # the input's own text is kept
        assert 1.0 < record["duration"] < 6.0
    assert reference.decode(by_key["utt_000001"]["text_ids"]) == AMHARIC
    errors = read_jsonl(tmp_path / "out" / "text" / "manifest-00000.errors.jsonl")
    assert sorted(e["key"] for e in errors) == ["line5", "utt_000002"]
    assert "empty once cleaned" in next(e["error"] for e in errors if e["key"] == "utt_000002")


def test_a_missing_or_broken_tokenizer_is_one_line(text_corpus, tmp_path):
    for tokenizer, said in ((str(tmp_path / "none.model"), "no such file"),
                            (text_corpus["manifest"], "not a SentencePiece model")):
        pipeline = tmp_path / "text.toml"
        pipeline.write_text(f'inputs = ["{text_corpus["manifest"]}"]\nout = "{tmp_path / "out"}"\n\n'
                            f'[[stage]]\nkind = "text"\nname = "text"\ntokenizer = "{tokenizer}"\n')
        result = run_audiomill("run", str(pipeline))
        assert result.returncode == 1 and said in result.stderr and "Traceback" not in result.stderr
        assert not os.path.exists(tmp_path / "out" / "_audiomill" / "plan.json")
