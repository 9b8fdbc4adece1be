"""The semantic codecs' filter banks are computed in the decode processes, not on the model's thread.

Through the real runner (decoders, rings, batches of several clips, a long file windowed),
X-codec2 and MaskGCT get their features from the decoders (this process's extractor is made
to fail, so any computed here would show as errors) and write the codes each clip gets alone,
which for one-window clips are those of the upstream classes themselves.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from audiomill.audio import decode
from audiomill.chunking import plan_windows
from audiomill.codecs import codec_info, load_codec
from audiomill.corpus import encode_audio, speech
from audiomill.features import ExtractorFeatures, Features, collate
from audiomill.runner.decode import Task, WindowPlan, decode_task

SECONDS = (2.3, 3.1, 3.1, 1.4, 11.0)  # two of one length batch together; 11 s is windowed at 4 s


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features-corpus")
    paths = []
    for number, seconds in enumerate(SECONDS):
        samples, rate = speech(seconds, seed=number if number != 2 else 1)  # clip 2: clip 1's audio again
        path = folder / f"clip{number}.flac"
        path.write_bytes(encode_audio(samples, rate, "flac"))
        paths.append(str(path))
    return paths


def _alone(stage, samples: np.ndarray) -> list[list[int]]:
    """A file's codes with each of its windows encoded alone, in this process, joined as the stage joins them."""
    windows = plan_windows(len(samples), stage.window, stage.overlap, stage.alignment)
    results = [stage.encode_arrays([samples[w.start : w.end]])[0] for w in windows]
    levels = stage.join(windows, results)
    return [row.tolist() for level in levels for row in (level if level.ndim > 1 else [level])]


@pytest.mark.parametrize("name", ["xcodec2", "maskgct-semantic"])
def test_features_come_from_the_decoders_and_codes_equal_each_clip_alone(name, files, tmp_path, monkeypatch):
    import importlib

    from audiomill.runner.shard import ShardProcessor
    from audiomill.runner.state import OutputFolder
    from audiomill.sources.discover import discover_shards
    from audiomill.stages.tokenize import TokenizeStage

    info = codec_info(name)
    folder = importlib.import_module(info.module).save_tiny(info, str(tmp_path / "model"))
    codec = load_codec(name, folder, "cpu", {})
    assert isinstance(codec.featurizer, ExtractorFeatures)
    stage = TokenizeStage(codec, 4.0, 1.0, 120.0)
    expected, windows = {}, 0
    for path in files:
        samples = decode(path, codec.sample_rate).samples
        expected[os.path.basename(path)[:-5]] = _alone(stage, samples)
        windows += len(plan_windows(len(samples), stage.window, stage.overlap, stage.alignment))
    if name == "xcodec2":  # a one-window clip: the upstream feature extractor and model themselves
        from transformers.models.xcodec2 import Xcodec2FeatureExtractor, Xcodec2Model

        clip = decode(files[0], 16000).samples
        inputs = Xcodec2FeatureExtractor.from_pretrained(folder)(clip, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            upstream = Xcodec2Model.from_pretrained(folder).eval().encode(**inputs).audio_codes[0].tolist()
        assert expected["clip0"] == upstream

    computed_here = []

    def refuse(self, samples):
        computed_here.append(len(samples))
        raise RuntimeError("features computed on the model's thread")

    monkeypatch.setattr(ExtractorFeatures, "__call__", refuse)  # here only: the decoders import their own
    stage = TokenizeStage(codec, 4.0, 1.0, 120.0)
    came = []
    add_window = stage.add_window
    stage.add_window = lambda state, number, window, samples, *rest: (came.append(type(samples)) or
                                                                      add_window(state, number, window, samples, *rest))
    out = OutputFolder(str(tmp_path / "out"))
    out.create()
    processor = ShardProcessor(out, stage, decode_workers=2)
    try:
        results = list(processor.run_shards(discover_shards([os.path.dirname(files[0])]), False, lambda event: None))
        shared = processor.pool.shared_windows
    finally:
        processor.close()
    assert [r.status for r in results] == ["done"]
    assert computed_here == [] and set(came) == {Features}
    assert shared == len(came) == windows > len(files)  # every window through a ring, the long file's several
    assert stage.counts.batches < len(came)  # some windows did share a call
    records = {}
    for shard_file in os.listdir(out.out):
        if shard_file.endswith(".jsonl") and not shard_file.endswith("errors.jsonl"):
            with open(os.path.join(out.out, shard_file)) as handle:
                records.update((r["key"], r) for r in map(json.loads, handle))
    assert sorted(records) == sorted(expected)
    for key, tokens in expected.items():
        assert records[key]["tokens"] == tokens, key
    assert len(set(records["clip4"]["tokens"][0])) > 3  # codes follow the audio: the test could fail


class Broken:
    """A feature function that fails (picklable, as a view's must be)."""

    padding = ()

    def __call__(self, samples):
        raise ValueError("no features for this")


def test_a_window_whose_features_fail_in_the_decoder_comes_as_samples(files):
    good = ExtractorFeatures.of(load_codec("maskgct-semantic", None, "cpu", {}).featurizer.extractor(),
                                (("input_features", 1, 0.0), ("attention_mask", 1, 0)))
    sent = {}
    for label, features in (("good", good), ("broken", Broken())):
        messages = []
        decode_task(Task(0, files[0]), [WindowPlan(16000, 0, 0, 320, features)], messages.append)
        sent[label] = [m[4] for m in messages if m[0] == "window"]
        assert messages[-1] == ("done", 0)
    [features], [samples] = sent["good"], sent["broken"]
    assert isinstance(features, Features) and isinstance(samples, np.ndarray)
    assert len(features) == len(samples)  # the window's length in samples, either way
    assert np.array_equal(collate([features], good.padding)["input_features"], good(samples)["input_features"])
