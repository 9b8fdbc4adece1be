"""Masked batching through the real runner: clips of every length in full batches, each clip's
codes those of encoding it alone (the codec's own package, called directly), long files windowed.

SNAC 24 kHz, DAC 16 kHz, Mimi and EnCodec 24 kHz (tiny real architectures) as four stages of
one pipeline: one run
batches with padding masked, another with ``max-padding = 0`` (only clips of one length
together, as before masking): the outputs are the same records, the masked run's batches are several times fuller, and every clip
short enough to be encoded in one window has the codes of the upstream model on it alone."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from audiomill.audio import decode
from audiomill.corpus import encode_audio, speech
from tests.conftest import read_jsonl, run_audiomill

DURATIONS = [1.2, 7.5, 2.3, 4.1, 3.3, 6.2, 1.7, 5.5, 2.9, 4.8, 3.7, 1.1, 6.9, 26.0]  # the last one is windowed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed") / "clips"
    folder.mkdir()
    order = list(range(len(DURATIONS)))
    random.Random(5).shuffle(order)
    for rank, index in enumerate(order):
        samples, rate = speech(DURATIONS[index], seed=index)
        extension = ("wav", "flac", "mp3")[index % 3]
        (folder / f"c{rank:02d}.{extension}").write_bytes(encode_audio(samples, rate, extension))
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    from audiomill.codecs import codec_info
    from audiomill.codecs.hf import save_tiny

    return {name: save_tiny(codec_info(name), str(tmp_path_factory.mktemp(name)))
            for name in ("dac-16khz", "mimi", "encodec-24khz")}


def _calls(stderr: str) -> dict[str, float]:
    """Per stage, the mean clips per model call its worker logged."""
    return {match.group(1): float(match.group(2))
            for match in re.finditer(r"INFO (\w+): \d+ model calls, ([\d.]+) clips each", stderr)}


def _reference(codec: str, model_dir: str):
    """The upstream model, loaded once: a clip's samples -> its codes, called directly."""
    import torch

    if codec == "snac-24khz":
        from snac import SNAC

        model = SNAC.from_pretrained(model_dir).eval()
        encode = lambda x: [level[0].tolist() for level in model.encode(x)]  # noqa: E731
    elif codec == "dac-16khz":
        from transformers import DacModel

        model = DacModel.from_pretrained(model_dir).eval()
        encode = lambda x: model.encode(x).audio_codes[0].tolist()  # noqa: E731
    elif codec == "mimi":
        from transformers import MimiModel

        model = MimiModel.from_pretrained(model_dir).eval()
        encode = lambda x: model.encode(x, num_quantizers=8).audio_codes[0].tolist()  # noqa: E731
    else:
        from transformers import EncodecModel

        model = EncodecModel.from_pretrained(model_dir).eval()
        encode = lambda x: model.encode(x, bandwidth=6.0).audio_codes[0, 0].tolist()  # noqa: E731

    def codes(samples: np.ndarray) -> list[list[int]]:
        with torch.inference_mode():
            return encode(torch.from_numpy(samples)[None, None, :])

    return codes


def _differences(records: list[dict], others: list[dict]) -> list[str]:
    """Where two runs' records differ: per key, the fields, and for codes the frames that differ."""
    found = []
    for record, other in zip(records, others):
        for field in sorted(set(record) | set(other)):
            if record.get(field) == other.get(field):
                continue
            if field == "tokens" and len(record[field]) == len(other[field]):
                frames = [(level, frame) for level, (a, b) in enumerate(zip(record[field], other[field]))
                          for frame in range(max(len(a), len(b))) if a[frame:frame + 1] != b[frame:frame + 1]]
                found.append(f"{record['key']}: {len(frames)} codes differ, first (level, frame) {frames[:5]}, "
                             f"of {[len(level) for level in record[field]]} frames")
            else:
                found.append(f"{record.get('key')}: {field} {str(record.get(field))[:80]} != "
                             f"{str(other.get(field))[:80]}")
    return found + ([f"{len(records)} records != {len(others)}"] if len(records) != len(others) else [])


def test_masked_batches_are_full_and_every_code_is_the_clips_alone(corpus, tiny_snac, tiny_models, tmp_path):
    from tests.test_pipeline import write_pipeline

    stages = [{"name": "snac", "codec": "snac-24khz", "model-path": tiny_snac},
              {"name": "dac", "codec": "dac-16khz", "model-path": tiny_models["dac-16khz"]},
              {"name": "mimi", "codec": "mimi", "model-path": tiny_models["mimi"]},
              {"name": "encodec", "codec": "encodec-24khz", "model-path": tiny_models["encodec-24khz"]}]
    settings = {"chunk-seconds": 10, "overlap-seconds": 2, "batch-seconds": 30}
    masked = run_audiomill("run", write_pipeline(tmp_path / "masked.toml", [str(corpus)], tmp_path / "masked",
                                                 stages, **settings), check=True)
    lengths = run_audiomill("run", write_pipeline(tmp_path / "lengths.toml", [str(corpus)], tmp_path / "lengths",
                                                  stages, **settings, **{"max-padding": 0}), check=True)
    fuller, before = _calls(masked.stderr), _calls(lengths.stderr)
    for stage in stages:
        name, codec, model = stage["name"], stage["codec"], stage["model-path"]
        records = read_jsonl(tmp_path / "masked" / name / "clips-00000.jsonl")
        alone = read_jsonl(tmp_path / "lengths" / name / "clips-00000.jsonl")
        same = records == alone  # (a short message: the whole diff of the codes is pages of numbers)
        assert same, (name, _differences(records, alone))
        assert fuller[name] >= 2.5 * before[name], (name, fuller, before)
        reference = _reference(codec, model)
        rate = records[0]["sample_rate"]
        checked = 0
        for record in records:
            samples = decode(str(corpus / record["audio_file"]), rate).samples
            if len(samples) > 10 * rate:
                continue  # windowed: the same bytes as the run whose windows batch only with their equals
            assert record["tokens"] == reference(samples), (name, record["key"])
            checked += 1
        assert checked == len(DURATIONS) - 1
