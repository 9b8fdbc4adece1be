"""audiomill transcribe: exact words from pocketsphinx with a grammar, Whisper's batched and long-form
paths with a tiny random checkpoint, vad -> transcribe over known pauses, kills, and bad input.

The exactness test is pocketsphinx's (its English model ships in its wheel): espeak-ng sentences
whose words it recognises under a JSGF grammar of them. A random Whisper's text proves plumbing
only: batched text equals single-clip text, and long clips take transformers' long-form path.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from audiomill.corpus import SENTENCES, encode_audio, speak
from tests.conftest import read_jsonl, run_audiomill
from tests.sinks.conftest import kill_when, output_tree

RATE = 16000
SAID = (2, 3)  # sentences pocketsphinx gets word for word from espeak-ng, under a grammar of them


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def cut_speech(index: int) -> np.ndarray:
    """Sentence ``index`` at 16 kHz, from its first to its last loud 10 ms (-45 dBFS)."""
    import soxr

    samples, rate = speak(SENTENCES[index])
    samples = soxr.resample(samples, rate, RATE).astype(np.float32)
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt(np.mean(frames ** 2, axis=1)) > 10 ** (-45 / 20))
    return samples[int(loud[0]) * 160 : (int(loud[-1]) + 1) * 160]


@pytest.fixture(scope="module")
def asr_corpus(tmp_path_factory) -> dict:
    """Single sentences in MP3, FLAC and WAV (``files/``); one file of sentences joined by pauses of known
    length, silent or low noise (``pauses/``); a 33 s file (``long/``); a grammar of the sentences."""
    root = tmp_path_factory.mktemp("asr")
    files = root / "files"
    files.mkdir()
    truth = {}
    for number, (index, extension) in enumerate([(SAID[0], "mp3"), (SAID[1], "flac"), (SAID[0], "wav"),
                                                 (SAID[1], "mp3")]):
        samples, rate = speak(SENTENCES[index])
        (files / f"s{number}.{extension}").write_bytes(encode_audio(samples, rate, extension))
        truth[f"s{number}"] = words(SENTENCES[index])
    pauses = root / "pauses"
    pauses.mkdir()
    rng = np.random.default_rng(0)
    parts, spans, at = [], [], 0.0
    for number, gap in enumerate((0.8, 1.2, 0.6, 1.5, 0.9)):
        speech = cut_speech(SAID[number % 2])
        parts.append(speech)
        spans.append((at, at + len(speech) / RATE, words(SENTENCES[SAID[number % 2]])))
        at += len(speech) / RATE + gap
        quiet = rng.standard_normal(int(gap * RATE)) * 10 ** (-40 / 20) if number % 2 else np.zeros(int(gap * RATE))
        parts.append(quiet.astype(np.float32))
    (pauses / "talk.flac").write_bytes(encode_audio(np.concatenate(parts), RATE, "flac"))
    long = root / "long"
    long.mkdir()
    samples = np.concatenate([np.concatenate([cut_speech(i % len(SENTENCES)), np.zeros(RATE // 2, np.float32)])
                              for i in range(10)])
    assert len(samples) > 30 * RATE
    (long / "talk.flac").write_bytes(encode_audio(samples, RATE, "flac"))
    grammar = root / "said.jsgf"
    grammar.write_text("#JSGF V1.0;\ngrammar said;\npublic <said> = "
                       + " | ".join(f"( {words(SENTENCES[i])} )" for i in SAID) + ";\n")
    return {"files": str(files), "pauses": str(pauses), "long": str(long), "grammar": str(grammar),
            "truth": truth, "spans": spans}


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> str:
    from audiomill.asr import save_tiny_whisper

    return save_tiny_whisper(str(tmp_path_factory.mktemp("whisper") / "tiny"))


def sphinx(*args: str) -> list[str]:
    return ["--backend", "pocketsphinx", *args]


def test_pocketsphinx_with_a_grammar_gives_the_exact_words_and_a_nemo_manifest(asr_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_audiomill("transcribe", asr_corpus["files"], "--out", str(out),
                           *sphinx("--grammar", asr_corpus["grammar"]))
    assert result.returncode == 0, result.stderr
    records = {r["key"]: r for r in read_jsonl(out / "files-00000.jsonl")}
    assert {key: r["text"] for key, r in records.items()} == asr_corpus["truth"]
    for record in records.values():
        assert record["backend"] == "pocketsphinx" and record["language"] == "en" and record["flags"] == []
        assert record["offset"] == 0.0 and 2.5 < record["duration"] < 5.5
    manifest = read_jsonl(out / "manifest.jsonl")
    assert [m["key"] for m in manifest] == sorted(asr_corpus["truth"])
    for line in manifest:
        assert os.path.isfile(line["audio_filepath"]) and "offset" not in line
        assert line["text"] == asr_corpus["truth"][line["key"]]
        assert line["duration"] == records[line["key"]]["duration"]
    # the manifest is an input every command takes: its rows already have text, so they pass through
    again = run_audiomill("transcribe", str(out / "manifest.jsonl"), "--out", str(tmp_path / "again"),
                          *sphinx("--grammar", asr_corpus["grammar"]))
    assert again.returncode == 0, again.stderr
    assert [(m["key"], m["text"]) for m in read_jsonl(tmp_path / "again" / "manifest.jsonl")] == [
        (m["key"], m["text"]) for m in manifest]


def test_a_pocketsphinx_transcript_does_not_depend_on_the_clips_decoded_before_it():
    """One decoder serves a whole worker: a clip's words and confidence must be those a fresh decoder gives,
    whatever it decoded before (the front end's live CMN otherwise carries over: CI once got other words
    for one clip in a SLURM task than in the local run)."""
    from audiomill.asr import PocketSphinx

    clip = cut_speech(SAID[1])
    noise = (np.random.default_rng(1).standard_normal(3 * RATE) * 0.3).astype(np.float32)
    alone = PocketSphinx().transcribe([clip])[0]
    after = PocketSphinx().transcribe([noise, cut_speech(SAID[0]) * 0.05, clip])[2]
    assert alone.text and after == alone


def test_vad_then_transcribe_gives_one_transcript_per_segment_and_none_for_pauses(asr_corpus, tmp_path):
    pipeline = tmp_path / "prep.toml"
    pipeline.write_text(f'inputs = ["{asr_corpus["pauses"]}"]\nout = "{tmp_path / "out"}"\n\n'
                        '[[stage]]\nkind = "vad"\nname = "vad"\nsegment = "0.5:4.5"\n\n'
                        f'[[stage]]\nkind = "transcribe"\nname = "asr"\nbackend = "pocketsphinx"\n'
                        f'grammar = "{asr_corpus["grammar"]}"\n')
    result = run_audiomill("run", str(pipeline))
    assert result.returncode == 0, result.stderr
    segments = [r for r in read_jsonl(tmp_path / "out" / "vad" / "pauses-00000.jsonl") if not r["dropped"]]
    records = read_jsonl(tmp_path / "out" / "asr" / "pauses-00000.jsonl")
    # the vad stage's segments, key for key, and a transcript for each sentence, in order: nothing for a pause
    assert [(r["key"], r["offset"], r["duration"]) for r in records] == [
        (s["key"], s["offset"], s["duration"]) for s in segments]
    spans = asr_corpus["spans"]
    assert [r["text"] for r in records] == [text for _, _, text in spans]
    for record, (start, end, _) in zip(records, spans):
        assert record["source_key"] == "talk"
        assert abs(record["offset"] - start) < 0.2 and abs(record["offset"] + record["duration"] - end) < 0.25
    manifest = read_jsonl(tmp_path / "out" / "asr" / "manifest.jsonl")
    assert [(m["offset"], m["duration"], m["text"]) for m in manifest] == [
        (r["offset"], r["duration"], r["text"]) for r in records]


def test_whisper_batched_text_equals_single_clip_text_and_long_clips_take_the_long_form_path(asr_corpus,
                                                                                           tiny_whisper, tmp_path):
    from audiomill.asr import Whisper

    texts = {}
    oom = {"AUDIOMILL_INJECT_OOM": "clips>2"}  # out of memory on batches of 3 or more: halved, the same text
    for name, seconds, env in (("batched", "120", {}), ("single", "0.5", {}), ("halved", "120", oom)):
        inputs = [asr_corpus["files"]] + ([asr_corpus["long"]] if name != "halved" else [])
        result = run_audiomill("transcribe", *inputs, "--out", str(tmp_path / name),
                               "--model-path", tiny_whisper, "--max-tokens-per-second", "3",
                               "--batch-seconds", seconds, env=env)
        assert result.returncode == 0, result.stderr
        records = [r for path in sorted((tmp_path / name).glob("*.jsonl")) if path.name != "manifest.jsonl"
                   for r in read_jsonl(path)]
        texts[name] = {r["key"]: (r["text"], r["language"], r["confidence"]) for r in records}
        calls = re.search(r"(\d+) model calls, ([\d.]+) clips each", result.stderr)
        assert calls is not None, result.stderr
        if name == "batched":  # the four short clips in one call
            assert float(calls.group(2)) > 1.5
        elif name == "single":
            assert float(calls.group(2)) == 1.0
    assert len(texts["batched"]) == 5 and all(text for text, _, _ in texts["batched"].values())
    assert {k: v[:2] for k, v in texts["halved"].items()} == {k: v[:2] for k, v in texts["batched"].items()
                                                             if k != "talk"}
    for key, (text, language, confidence) in texts["batched"].items():
        alone = texts["single"][key]
        assert (text, language) == alone[:2], key
        assert confidence is None and alone[2] is None if key == "talk" else abs(confidence - alone[2]) < 2e-3
    # the 33 s clip went through transformers' long-form generation, whose text the run wrote
    from audiomill.audio import decode

    backend = Whisper(tiny_whisper, max_tokens_per_second=3)
    frames = []
    generate = backend.model.generate
    backend.model.generate = lambda features, **kw: frames.append(features.shape[-1]) or generate(features, **kw)
    samples = decode(os.path.join(asr_corpus["long"], "talk.flac"), RATE).samples
    assert backend.transcribe([samples])[0].text == texts["batched"]["talk"][0]
    assert frames == [len(samples) // 160]  # every frame given, none cut at 30 s


def test_faster_whisper_runs_a_ctranslate2_conversion_of_the_same_checkpoint(asr_corpus, tiny_whisper, tmp_path):
    """Plumbing: the tiny checkpoint converted as users convert theirs, every clip transcribed (the 33 s one
    in 30 s windows), with a language the model knows; a rerun gives the same bytes (greedy, no sampling)."""
    from ctranslate2.converters import TransformersConverter

    from audiomill.asr import TINY_LANGUAGES

    model = str(tmp_path / "ct2")
    TransformersConverter(tiny_whisper, copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(model)
    runs = []
    for name in ("one", "two"):
        result = run_audiomill("transcribe", asr_corpus["files"], asr_corpus["long"], "--out", str(tmp_path / name),
                               "--backend", "faster-whisper", "--model-path", model, "--max-tokens-per-second", "3")
        assert result.returncode == 0, result.stderr
        runs.append(output_tree(tmp_path / name))
    assert runs[0] == runs[1]
    records = [r for path in sorted((tmp_path / "one").glob("*-00000.jsonl")) for r in read_jsonl(path)]
    assert len(records) == 5 and {r["backend"] for r in records} == {"faster-whisper"}
    assert all(r["language"] in TINY_LANGUAGES for r in records)
    assert any(r["text"] for r in records)


def test_killed_runs_resume_to_the_same_records_and_manifest(asr_corpus, tmp_path):
    import shutil

    many = tmp_path / "many"
    many.mkdir()
    for copy in range(4):
        for name in sorted(os.listdir(asr_corpus["files"])):
            shutil.copy(os.path.join(asr_corpus["files"], name), many / f"c{copy}-{name}")
    args = ["transcribe", str(many), "--files-per-shard", "4", *sphinx("--grammar", asr_corpus["grammar"])]
    reference = tmp_path / "reference"
    assert run_audiomill(*args, "--out", str(reference)).returncode == 0
    out = tmp_path / "out"
    for records in (1, 6):  # killed once a record is journaled, then later in another shard
        def ready(records=records) -> bool:
            partial = [os.path.join(out, n) for n in os.listdir(out) if n.endswith(".partial")] if out.exists() else []
            done = [n for n in os.listdir(out) if n.endswith(".jsonl")] if out.exists() else []
            return sum(sum(1 for _ in open(p)) for p in partial) + 4 * len(done) >= records
        kill_when([*args, "--out", str(out)], ready)
    assert not (out / "manifest.jsonl").exists() or output_tree(out) != output_tree(reference)
    assert run_audiomill(*args, "--out", str(out)).returncode == 0
    assert output_tree(out) == output_tree(reference)
    assert len(read_jsonl(out / "manifest.jsonl")) == 16


def test_bad_input_rows_are_error_records_and_rows_with_text_pass_through(asr_corpus, tmp_path):
    files = asr_corpus["files"]
    manifest = tmp_path / "in.jsonl"
    manifest.write_text(
        json.dumps({"audio_filepath": os.path.join(files, "s1.flac"), "speaker": "a"}) + "\n"
        + "{this is not json\n"
        + json.dumps({"audio_filepath": os.path.join(files, "missing.wav")}) + "\n"
        + json.dumps({"audio_filepath": os.path.join(files, "s2.wav"), "text": "given by hand", "speaker": "b"}) + "\n")
    out = tmp_path / "out"
    result = run_audiomill("transcribe", str(manifest), "--out", str(out), *sphinx("--grammar", asr_corpus["grammar"]))
    assert result.returncode == 3, result.stderr  # complete, with file errors
    records = read_jsonl(out / "in-00000.jsonl")
    errors = read_jsonl(out / "in-00000.errors.jsonl")
    assert len(errors) == 2 and "not valid JSON" in errors[0]["error"] and "missing.wav" in errors[1]["audio_file"]
    by_file = {os.path.basename(r["audio_file"]): r for r in records}
    assert by_file["s1.flac"]["text"] == asr_corpus["truth"]["s1"] and by_file["s1.flac"]["speaker"] == "a"
    assert by_file["s2.wav"]["text"] == "given by hand" and by_file["s2.wav"]["speaker"] == "b"
    assert by_file["s2.wav"]["confidence"] is None  # passed through: no model saw it
    assert [m["text"] for m in read_jsonl(out / "manifest.jsonl")] == [asr_corpus["truth"]["s1"], "given by hand"]
    again = tmp_path / "again"
    run_audiomill("transcribe", str(manifest), "--out", str(again), "--overwrite-text",
                  *sphinx("--grammar", asr_corpus["grammar"]))
    by_file = {os.path.basename(r["audio_file"]): r for r in read_jsonl(again / "in-00000.jsonl")}
    assert by_file["s2.wav"]["text"] == asr_corpus["truth"]["s2"]
    assert by_file["s2.wav"]["meta"] == {"text": "given by hand"}  # the input's own text is kept beside it


def test_a_bad_grammar_or_missing_whisper_weights_is_one_line(asr_corpus, tmp_path):
    grammar = tmp_path / "odd.jsgf"
    grammar.write_text("#JSGF V1.0;\ngrammar odd;\npublic <odd> = ( hello qwzxv );\n")
    result = run_audiomill("transcribe", asr_corpus["files"], "--out", str(tmp_path / "a"),
                           *sphinx("--grammar", str(grammar)))
    assert result.returncode == 1 and "qwzxv" in result.stderr and "Traceback" not in result.stderr
    result = run_audiomill("transcribe", asr_corpus["files"], "--out", str(tmp_path / "b"))
    assert result.returncode == 1 and "--model-path" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "a" / "_audiomill" / "plan.json")


def test_hallucination_signs():
    from audiomill.asr import Transcript, flags, repeated

    assert repeated("thank you thank you thank you thank you")
    assert repeated("la la la la")
    assert not repeated("please call stella and ask her to bring these things from the store")
    babble = "mynbiqpmz jplsgqejeydtzirwztejdxcvkprdlnktugrpoqibzracx mw zvuatp khxkwcgshhzezr"
    assert flags(Transcript(babble), 2.0, 25.0, 0.6) == ["too long: 80 characters in 2.00 s"]
    assert flags(Transcript("so " * 30), 10.0, 25.0, 0.6) == ["repetition"]
    assert flags(Transcript("hello", no_speech_prob=0.9), 2.0, 25.0, 0.6) == ["no speech: probability 0.90"]
    assert flags(Transcript("hello there", no_speech_prob=0.1), 2.0, 25.0, 0.6) == []
