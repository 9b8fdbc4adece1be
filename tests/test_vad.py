"""audiomill vad: speech boundaries against known ones, AMELA's statistics against a direct computation
from each backend's own API, the CSV and the manifest, and the manifest into tokenize.

The audio is espeak-ng sentences joined by pauses of known length (0.3 to 2 s), every other
one silent and the others low noise at -40 dBFS; the truth is where each sentence's level
rises above -45 dBFS and last falls below it.
"""

from __future__ import annotations

import csv
import itertools
import json
import os

import numpy as np
import pytest

from audiomill.cli import main
from audiomill.corpus import SENTENCES, encode_audio, speak
from audiomill.vad import to_int16

RATE = 16000
PAUSES = (0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 0.4, 0.8)
BACKENDS = ("silero", "ten-vad")


def _speech_extent(samples: np.ndarray) -> tuple[int, int]:
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt(np.mean(frames ** 2, axis=1)) > 10 ** (-45 / 20))
    return int(loud[0]) * 160, (int(loud[-1]) + 1) * 160


def joined(seed: int, sentences: int, pauses=PAUSES) -> tuple[np.ndarray, list[tuple[float, float]], list[tuple[float, float]]]:
    """Sentences and pauses: the samples, the true speech spans and the pauses (seconds)."""
    import soxr

    rng = np.random.default_rng(seed)
    parts, speech, gaps, at = [], [], [], 0
    for number in range(sentences):
        samples, rate = speak(SENTENCES[(number + seed) % len(SENTENCES)])
        samples = soxr.resample(samples, rate, RATE).astype(np.float32)
        start, end = _speech_extent(samples)
        parts.append(samples[start:end])
        speech.append((at / RATE, (at + end - start) / RATE))
        at += end - start
        gap = int(pauses[(number + seed) % len(pauses)] * RATE)
        noise = rng.standard_normal(gap) * 10 ** (-40 / 20) if number % 2 else np.zeros(gap)
        parts.append(noise.astype(np.float32))
        gaps.append((at / RATE, (at + gap) / RATE))
        at += gap
    return np.concatenate(parts), speech, gaps


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three files of sentences and pauses (two over one 32.8 s window), one of 75 s (split), one that is not audio."""
    folder = tmp_path_factory.mktemp("vad-corpus")
    truth = {}
    for seed in range(3):
        samples, speech, gaps = joined(seed, 9)
        (folder / f"pauses{seed}.flac").write_bytes(encode_audio(samples, RATE, "flac"))
        truth[f"pauses{seed}"] = (speech, gaps)
    samples, _, _ = joined(7, 24, pauses=(0.2, 0.35, 0.6, 0.25, 1.2))
    (folder / "long.flac").write_bytes(encode_audio(samples, RATE, "flac"))
    (folder / "broken.mp3").write_bytes(b"ID3 this is not audio")
    return {"folder": str(folder), "truth": truth}


@pytest.fixture(scope="module", params=BACKENDS)
def vad_run(request, corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp(f"vad-{request.param}"))
    code = main(["vad", corpus["folder"], "--out", out, "--backend", request.param, "--progress", "none"])
    assert code == 3  # done, with one file error (broken.mp3)
    records = {}
    for name in os.listdir(out):
        if name.endswith(".jsonl") and name != "manifest.jsonl":
            with open(os.path.join(out, name)) as handle:
                records.update((r["key"], r) for r in map(json.loads, handle))
    return {"backend": request.param, "out": out, "records": records}


def test_speech_boundaries_are_found_within_150_ms_and_no_speech_inside_long_pauses(vad_run, corpus):
    found = total = 0
    for key, (speech, gaps) in corpus["truth"].items():
        segments = vad_run["records"][key]["speech_segments"]
        edges = [value for segment in segments for value in segment]
        for start, end in speech:
            total += 2
            found += sum(min(abs(edge - e) for e in edges) <= 0.15 for edge in (start, end))
        for start, end in gaps:
            if end - start > 0.5:  # the inside of a long pause holds no speech
                assert all(b <= start + 0.15 or a >= end - 0.15 for a, b in segments), (key, start, end, segments)
    assert found / total >= 0.9, (vad_run["backend"], found, total)


# -- AMELA's statistics, computed here from each backend's own API --------------------------------

def backend_flags(backend: str, samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-frame decisions as each backend's own API gives them, and the frame's samples."""
    if backend == "silero":
        from silero_vad.sequence_vad import SileroVADSequence

        from audiomill.vad import silero_model_path

        probs = SileroVADSequence(silero_model_path()).audio_forward(samples)
        return (probs >= 0.5).astype(np.uint8), 512
    from ten_vad import TenVad

    vad, hop = TenVad(hop_size=256, threshold=0.5), 256
    pcm = np.clip(samples * 32767.0, -32768, 32767).round().astype(np.int16)
    return np.array([max(0, vad.process(pcm[i * hop:(i + 1) * hop])[1]) for i in range(len(pcm) // hop)],
                    np.uint8), hop


def amela(flags: np.ndarray, hop: int, duration: float) -> dict:
    """AMELA's vad.py formulas, written out again: runs, their lengths, and its split search."""
    seconds = hop / RATE
    runs = [(value, len(list(group))) for value, group in itertools.groupby(flags.tolist())]
    spoken = [n * seconds for value, n in runs if value == 1]
    quiet = [n * seconds for value, n in runs if value == 0]
    stats = {}
    for label, lengths in (("spoken", spoken), ("nospch", quiet)):
        stats[f"max-{label}"] = max(lengths) if lengths else 0.0
        stats[f"min-{label}"] = min(lengths) if lengths else 0.0
        stats[f"avg-{label}"] = sum(lengths) / len(lengths) if lengths else 0.0
    stats["spch-ratio"] = float(np.mean(flags)) if len(flags) else 0.0
    splits = []
    if duration >= 30.0:
        target, look, pause = int(30 * RATE / hop), int(10 * RATE / hop), int(0.3 * RATE / hop)
        position, total = target, len(flags)
        while position < total - target:
            i, split = position, None
            while i < min(position + look, total):
                if flags[i] == 0:
                    begin = i
                    while i < total and flags[i] == 0:
                        i += 1
                    if i - begin >= pause:
                        split = begin + (i - begin) // 2
                        break
                else:
                    i += 1
            if split is None:
                position += look
            else:
                splits.append(split * seconds)
                position = split + target
    return {**stats, "splits": splits}


def test_statistics_and_splits_equal_amelas_formulas_on_the_backends_own_decisions(vad_run, corpus):
    from audiomill.audio import decode

    for key in ("pauses0", "pauses1", "long"):
        record = vad_run["records"][key]
        samples = decode(os.path.join(corpus["folder"], f"{key}.flac"), RATE).samples
        flags, hop = backend_flags(vad_run["backend"], samples)
        expected = amela(flags, hop, len(samples) / RATE)
        assert record["duration"] == pytest.approx(len(samples) / RATE)
        for name, value in expected.items():
            assert record[name] == pytest.approx(value, abs=1e-5), (key, name)
    assert len(vad_run["records"]["long"]["splits"]) >= 1  # 75 s with pauses: the split search did run


def test_the_csv_and_manifest_hold_every_file_and_the_manifest_goes_into_tokenize(vad_run, corpus, tiny_snac,
                                                                                 tmp_path):
    out, folder = vad_run["out"], corpus["folder"]
    with open(os.path.join(out, "vad.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["audio_filepath", "duration", "max-spoken", "min-spoken", "avg-spoken", "max-nospch",
                             "min-nospch", "avg-nospch", "spch-ratio", "splits", "error", "dropped"]
    by_path = {row["audio_filepath"]: row for row in rows}
    assert sorted(by_path) == sorted(os.path.join(folder, n) for n in os.listdir(folder))
    broken = by_path[os.path.join(folder, "broken.mp3")]
    assert broken["error"] and broken["duration"] == ""  # the bad file is an error row, not a crash
    long = by_path[os.path.join(folder, "long.flac")]
    assert [float(v) for v in long["splits"].split()] == pytest.approx(vad_run["records"]["long"]["splits"])
    with open(os.path.join(out, "manifest.jsonl")) as handle:
        manifest = [json.loads(line) for line in handle]
    assert sorted(m["audio_filepath"] for m in manifest) == sorted(
        os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".flac"))
    assert all(os.path.isabs(m["audio_filepath"]) and m["duration"] > 0 for m in manifest)

    tokens = str(tmp_path / "tokens")
    assert main(["tokenize", os.path.join(out, "manifest.jsonl"), "--out", tokens, "--codec", "snac-24khz",
                 "--model-path", tiny_snac, "--progress", "none"]) == 0
    [shard] = [n for n in os.listdir(tokens) if n.endswith(".jsonl") and not n.endswith("errors.jsonl")]
    with open(os.path.join(tokens, shard)) as handle:
        coded = [json.loads(line) for line in handle]
    assert len(coded) == len(manifest)
    for record in coded:  # the whole file, with the statistics as metadata
        source = next(m for m in manifest if m["audio_filepath"].endswith(record["audio_file"]))
        assert record["num_samples"] == round(source["duration"] * 24000)
        assert record["spch-ratio"] == source["spch-ratio"]


def test_vad_is_a_pipeline_stage_beside_tokenize_over_one_decode(vad_run, corpus, tiny_snac, tmp_path):
    if vad_run["backend"] != "silero":
        pytest.skip("one backend is enough for the pipeline")
    pipeline = tmp_path / "pipeline.toml"
    out = tmp_path / "prep"
    pipeline.write_text(f"""inputs = ["{corpus['folder']}"]\nout = "{out}"\nprogress = "none"\n
[[stage]]\nkind = "vad"\nname = "vad"\nmin-silence = 0.1\n
[[stage]]\nkind = "tokenize"\nname = "snac"\ncodec = "snac-24khz"\nmodel-path = "{tiny_snac}"\n""")
    assert main(["run", str(pipeline)]) == 3
    [shard] = [n for n in os.listdir(out / "vad") if n.endswith(".jsonl") and n[-13:] != ".errors.jsonl"
               and n != "manifest.jsonl"]
    with open(out / "vad" / shard) as handle:
        records = {r["key"]: r for r in map(json.loads, handle)}
    assert records == {k: r for k, r in vad_run["records"].items() if "error" not in r}  # as audiomill vad's
    assert (out / "vad" / "vad.csv").is_file() and (out / "vad" / "manifest.jsonl").is_file()
    assert len(os.listdir(out / "snac")) >= 2


def test_stages_of_one_backend_over_one_file_push_each_window_through_it_once():
    """A vad stage and the transcribe stage after it (whose own VadStage has the same backend settings)
    share the file's stream: each window goes through the backend once, whoever gets it first, and each
    stage's records are those it gives alone. A stage given other windows for the file is refused."""
    from audiomill.chunking import Window, plan_windows
    from audiomill.items import Item
    from audiomill.stages.vad import VadSettings, VadStage

    samples = joined(7, 24, pauses=(0.2, 0.35, 0.6, 0.25, 1.2))[0]
    pushed: list[int] = []

    def counted(stage: VadStage) -> VadStage:
        make = stage.backend.stream

        def stream():
            made = make()
            push = made.push
            made.push = lambda block: (pushed.append(len(block)), push(block))[1]
            return made

        stage.backend.stream = stream
        return stage

    def run(stages: list[VadStage], windows=None) -> list[list[dict]]:
        item = Item("long", "corpus", "long.flac", 0)
        windows = windows or plan_windows(len(samples), stages[0].window, 0, stages[0].alignment)
        states = [stage.begin(7, item) for stage in stages]
        found: list[list[dict]] = [[] for _ in stages]
        for number, window in enumerate(windows):
            for at, (stage, state) in enumerate(zip(stages, states)):
                for output in stage.add_window(state, number, window, samples[window.start : window.end],
                                               number == len(windows) - 1, len(samples)):
                    found[at] += output.records if output.error is None else [{"error": output.error}]
        return found

    [files] = run([counted(VadStage(VadSettings()))])
    [cut] = run([counted(VadStage(VadSettings(segment="3:30")))])
    alone = len(pushed)
    assert alone == 2 * 3 and sum(pushed) == 2 * len(samples)  # three windows a run
    pushed.clear()
    assert run([counted(VadStage(VadSettings())), counted(VadStage(VadSettings(segment="3:30")))]) == [files, cut]
    assert len(pushed) == 3 and sum(pushed) == len(samples)
    pushed.clear()
    other = [counted(VadStage(VadSettings())), counted(VadStage(VadSettings(threshold=0.6)))]
    assert run(other)[0] == files and len(pushed) == 6  # other settings: a stream each
    twice = [VadStage(VadSettings()), VadStage(VadSettings())]
    twice[1].guard.succeeded = True  # its failure is given back at once, not held
    item = Item("long", "corpus", "long.flac", 0)
    first, second = (stage.begin(8, item) for stage in twice)
    assert twice[0].add_window(first, 0, Window(0, 512, 0, 512), samples[:512], False, 0) == []
    [refused] = twice[1].add_window(second, 0, Window(0, 1024, 0, 1024), samples[:1024], False, 0)
    assert "where the stage sharing this file's VAD had" in refused.error


@pytest.mark.parametrize("count", [1, 3])
def test_one_file_or_three_work(count, corpus, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for number in range(count):
        samples, rate = speak(SENTENCES[number])
        (folder / f"f{number}.wav").write_bytes(encode_audio(samples, rate, "wav"))
    out = str(tmp_path / "out")
    assert main(["vad", str(folder), "--out", out, "--progress", "none"]) == 0
    with open(os.path.join(out, "manifest.jsonl")) as handle:
        assert len(handle.readlines()) == count


def test_int16_conversion_clips_instead_of_wrapping():
    assert to_int16(np.array([1.5, 1.0, -1.0, -2.0, 0.5], np.float32)).tolist() == [32767, 32767, -32767, -32768,
                                                                                     16384]


def test_segments_are_cut_at_pauses_and_tokenize_to_the_codes_of_the_same_audio_cut_by_hand(corpus, tiny_snac,
                                                                                          tmp_path):
    import soundfile

    folder, out = corpus["folder"], str(tmp_path / "segments")
    assert main(["vad", folder, "--out", out, "--segment", "3:30", "--write-audio", "FLAC", "--progress", "none"]) == 3
    [shard] = [n for n in os.listdir(out) if n.endswith(".jsonl") and not n.endswith("errors.jsonl")
               and n != "manifest.jsonl"]
    with open(os.path.join(out, shard)) as handle:
        records = [json.loads(line) for line in handle]
    by_file: dict[str, list[dict]] = {}
    for record in records:
        by_file.setdefault(record["source_key"], []).append(record)
    assert sorted(by_file) == ["long", "pauses0", "pauses1", "pauses2"]
    for key, segments in by_file.items():
        assert [s["key"] for s in segments] == [f"{key}-{n:04d}" for n in range(len(segments))]
        for before, after in zip(segments, segments[1:]):
            assert before["offset"] + before["duration"] <= after["offset"] + 1e-6  # in order, never overlapping
        for segment in segments:
            assert segment["dropped"] is None or "shorter than 3" in segment["dropped"]
            if segment["dropped"] is None:
                assert 3.0 <= segment["duration"] <= 30.0
        if key != "long":  # cut at pauses: no segment starts or ends inside a sentence
            speech, _ = corpus["truth"][key]
            for segment in segments:
                for edge in (segment["offset"], segment["offset"] + segment["duration"]):
                    assert not any(a + 0.15 < edge < b - 0.15 for a, b in speech), (key, edge)
    assert len(by_file["long"]) >= 3  # 75 s in segments of at most 30 s

    with open(os.path.join(out, "manifest.jsonl")) as handle:
        manifest = [json.loads(line) for line in handle]
    assert len(manifest) == sum(1 for r in records if r["dropped"] is None)
    check_segment_audio(os.path.join(out, "audio", shard.replace(".jsonl", ".tar")), records, folder)
    tokens = str(tmp_path / "tokens")
    assert main(["tokenize", os.path.join(out, "manifest.jsonl"), "--out", tokens, "--codec", "snac-24khz",
                 "--model-path", tiny_snac, "--progress", "none"]) == 0
    [coded_file] = [n for n in os.listdir(tokens) if n.endswith(".jsonl") and not n.endswith("errors.jsonl")]
    with open(os.path.join(tokens, coded_file)) as handle:
        coded = {r["key"]: r for r in map(json.loads, handle)}
    assert sorted(coded) == sorted(m["key"] for m in manifest)
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    chosen = [m for m in manifest if m["key"].startswith("long-")][:2] + [m for m in manifest if m["key"] == "pauses1-0001"]
    for line in chosen:
        samples, rate = soundfile.read(line["audio_filepath"], dtype="float32")
        start = int(round(line["offset"] * rate))
        cut = samples[start : start + int(round(line["duration"] * rate))]
        soundfile.write(str(by_hand / f"{line['key']}.wav"), cut, rate, subtype="FLOAT")
    hand_tokens = str(tmp_path / "hand-tokens")
    assert main(["tokenize", str(by_hand), "--out", hand_tokens, "--codec", "snac-24khz", "--model-path", tiny_snac,
                 "--progress", "none"]) == 0
    [hand_file] = [n for n in os.listdir(hand_tokens) if n.endswith(".jsonl") and not n.endswith("errors.jsonl")]
    with open(os.path.join(hand_tokens, hand_file)) as handle:
        hand = {r["key"]: r for r in map(json.loads, handle)}
    assert len(hand) == 3
    for key, record in hand.items():
        assert coded[key]["tokens"] == record["tokens"], key
        assert coded[key]["num_samples"] == record["num_samples"]


def check_segment_audio(tar: str, records: list[dict], folder: str) -> None:
    """--write-audio: read by WebDataset's own reader, a sample per segment not dropped, in the records' order,
    its FLAC the source's samples over the segment (a 16 kHz 16-bit source's own, exactly; another's resampled
    by soxr, within 2 LSB), its JSON the record."""
    import io

    import soundfile
    import soxr
    import webdataset

    samples = list(webdataset.WebDataset(tar, shardshuffle=False))
    kept = [r for r in records if r["dropped"] is None]
    assert [s["__key__"] for s in samples] == [r["key"].replace(".", "_") for r in kept] and kept
    assert all(set(s) == {"__key__", "__url__", "__local_path__", "flac", "json"} - ({"__local_path__"} - set(s))
               for s in samples)
    sources = {}
    for sample, record in zip(samples, kept):
        assert json.loads(sample["json"]) == {**record, "sample_rate": RATE}
        audio, rate = soundfile.read(io.BytesIO(sample["flac"]), dtype="int16")
        assert rate == RATE and soundfile.info(io.BytesIO(sample["flac"])).subtype == "PCM_16"
        if record["source_key"] not in sources:
            source, source_rate = soundfile.read(os.path.join(folder, record["audio_file"]), dtype="int16")
            if source_rate != RATE:
                source = soxr.resample(source.astype(np.float32) / 32768, source_rate, RATE, quality="HQ")
                source = np.clip(np.round(source * 32768), -32768, 32767).astype(np.int16)
            sources[record["source_key"]] = (source, source_rate == RATE)
        source, exact = sources[record["source_key"]]
        start = int(round(record["offset"] * RATE))
        cut = source[start : start + int(round(record["duration"] * RATE))]
        assert len(audio) == len(cut)
        difference = np.abs(audio.astype(np.int32) - cut)
        assert (difference.max() == 0) if exact else (difference.max() <= 2), (record["key"], difference.max())


def test_filters_mark_files_dropped_with_the_reason_and_keep_them_out_of_the_manifest_only(corpus, tmp_path):
    out = str(tmp_path / "filtered")
    assert main(["vad", corpus["folder"], "--out", out, "--max-duration", "60", "--min-speech-ratio", "0.2",
                 "--progress", "none"]) == 3
    with open(os.path.join(out, "vad.csv"), newline="") as handle:
        rows = {os.path.basename(r["audio_filepath"]): r for r in csv.DictReader(handle)}
    assert "over --max-duration 60" in rows["long.flac"]["dropped"] and rows["long.flac"]["duration"]
    assert rows["pauses0.flac"]["dropped"] == ""
    with open(os.path.join(out, "manifest.jsonl")) as handle:
        kept = {os.path.basename(json.loads(line)["audio_filepath"]) for line in handle}
    assert kept == {"pauses0.flac", "pauses1.flac", "pauses2.flac"}


def _outputs(out: str) -> dict[str, bytes]:
    """Every file in ``out`` and in its audio/ folder (if any), by name."""
    files = {}
    for folder in (out, os.path.join(out, "audio")):
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            if os.path.isfile(os.path.join(folder, name)):
                with open(os.path.join(folder, name), "rb") as handle:
                    files[os.path.relpath(os.path.join(folder, name), out)] = handle.read()
    return files


@pytest.mark.parametrize("mode", ["files", "segments"])
def test_killed_twice_the_run_resumes_to_byte_identical_records_csv_and_manifest(mode, corpus, tmp_path):
    """Killed once a shard is done and again once two are (per file); with --segment and --write-audio,
    killed while a shard's member journal is being written, then once a shard is done."""
    import signal
    import subprocess
    import sys
    import time

    args = ["vad", corpus["folder"], "--progress", "none"]
    args += ["--files-per-shard", "1"] if mode == "files" else ["--files-per-shard", "3", "--segment", "3:30",
                                                                "--write-audio", "flac"]
    reference = str(tmp_path / "reference")
    assert main([*args, "--out", reference]) == 3
    expected = _outputs(reference)
    shards = 5 if mode == "files" else 2
    tars = 0 if mode == "files" else shards
    assert {"vad.csv", "manifest.jsonl", "README.md"} <= set(expected)
    assert len(expected) == 3 + shards + 1 + tars  # 1 error file
    out = str(tmp_path / "out")
    done = os.path.join(out, "_audiomill", "done")

    def shards_done() -> int:
        return len(os.listdir(done)) if os.path.isdir(done) else 0

    def members_journaled() -> bool:
        audio = os.path.join(out, "audio")
        return os.path.isdir(audio) and any(n.endswith(".tar.partial") and os.path.getsize(os.path.join(audio, n))
                                            for n in os.listdir(audio))

    kills = 0
    moments = [lambda: shards_done() >= 1, lambda: shards_done() >= 2] if mode == "files" else \
        [members_journaled, lambda: shards_done() >= 1]
    for moment in moments:
        process = subprocess.Popen([sys.executable, "-m", "audiomill", *args, "--out", out],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None and not moment():
            time.sleep(0.002)
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        if moment is members_journaled:
            assert members_journaled()  # killed with a shard's members half journaled
    assert kills == 2 and shards_done() < shards, "the run finished before it was killed: the test proves nothing"
    assert main([*args, "--out", out]) == 3
    assert _outputs(out) == expected


@pytest.mark.parametrize("compressed", [False, True])
def test_a_manifest_of_tar_members_reads_them_back_as_the_shard_itself_gives_them(compressed, corpus, tiny_snac,
                                                                                tmp_path):
    from audiomill.corpus import write_tar

    members = []
    for name in ("pauses0.flac", "broken.mp3", "pauses1.flac"):
        with open(os.path.join(corpus["folder"], name), "rb") as handle:
            members.append((f"set/{name}", handle.read()))
    archive = str(tmp_path / "shard.tar")
    write_tar(archive, members)
    if compressed:  # the members are then extracted, not read in place
        import gzip

        with open(archive, "rb") as handle, gzip.open(archive + ".gz", "wb") as packed:
            packed.write(handle.read())
        os.remove(archive)
        archive += ".gz"
    out = str(tmp_path / "vad")
    assert main(["vad", archive, "--out", out, "--progress", "none"]) == 3
    with open(os.path.join(out, "manifest.jsonl")) as handle:
        manifest = [json.loads(line) for line in handle]
    assert [m["audio_filepath"] for m in manifest] == [f"{archive}#set/pauses0.flac", f"{archive}#set/pauses1.flac"]
    tokens = {}
    for label, source in (("manifest", os.path.join(out, "manifest.jsonl")), ("shard", archive)):
        folder = str(tmp_path / label)
        main(["tokenize", source, "--out", folder, "--codec", "snac-24khz", "--model-path", tiny_snac,
              "--progress", "none"])
        [name] = [n for n in os.listdir(folder) if n.endswith(".jsonl") and not n.endswith("errors.jsonl")]
        with open(os.path.join(folder, name)) as handle:
            tokens[label] = {r["key"]: r["tokens"] for r in map(json.loads, handle)}
    assert tokens["manifest"] == tokens["shard"] and sorted(tokens["shard"]) == ["set/pauses0", "set/pauses1"]


def test_segment_audio_after_a_retry_or_a_lost_tar_is_what_a_clean_run_writes(tmp_path):
    """--retry-errors takes up a finished shard's tar with its records (one file's segments, keyed by their
    source_key); a tar that went missing makes the shard be written again; both give a clean run's bytes."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "talk.v2.wav").write_bytes(encode_audio(joined(3, 9)[0], RATE, "wav"))  # a dot in its key
    (folder / "later.wav").write_bytes(b"RIFF, not audio yet")
    args = ["vad", str(folder), "--segment", "3:30", "--write-audio", "flac", "--progress", "none"]
    out, fresh = str(tmp_path / "out"), str(tmp_path / "fresh")
    assert main([*args, "--out", out]) == 3
    (folder / "later.wav").write_bytes(encode_audio(joined(4, 9)[0], RATE, "wav"))  # mended
    assert main([*args, "--out", out, "--retry-errors"]) == 0
    assert main([*args, "--out", fresh]) == 0
    tar = os.path.join("audio", "in-00000.tar")
    with open(os.path.join(fresh, "in-00000.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    assert {r["source_key"] for r in records} == {"later", "talk.v2"}
    check_segment_audio(os.path.join(fresh, tar), records, str(folder))  # 16 kHz WAV: the samples exactly
    expected = {**_outputs(fresh), tar: _outputs(os.path.join(fresh, "audio"))["in-00000.tar"]}
    assert {**_outputs(out), tar: _outputs(os.path.join(out, "audio"))["in-00000.tar"]} == expected
    os.remove(os.path.join(out, tar))
    shutil.copy(os.path.join(fresh, "in-00000.jsonl"), os.path.join(out, "in-00000.jsonl"))
    assert main([*args, "--out", out]) == 0  # the tar is missing: the shard is written again
    assert _outputs(os.path.join(out, "audio")) == _outputs(os.path.join(fresh, "audio"))
    assert main(["status", out, "--check"]) == 0
