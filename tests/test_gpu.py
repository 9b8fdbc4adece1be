"""On a CUDA GPU: real device memory, the budget probe, the encoding thread, every GPU.

Skipped where there is no GPU (CI has none); ``benchmarks/gpu_run.sh`` runs them on a
lent GPU machine together with the GPU benchmarks.
"""

from __future__ import annotations

import json
import tarfile

import pytest
import torch

from audiomill.audio import decode
from tests.conftest import read_jsonl, run_audiomill
from tests.runner.conftest import outputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

WINDOWS = ["--chunk-seconds", "10", "--overlap-seconds", "2"]


def run_shards(out, paths: list[str], stage) -> dict[str, bytes]:
    """The shards through ShardProcessor with ``stage`` (in this process, so its device memory can be capped)."""
    from audiomill.runner.shard import ShardProcessor
    from audiomill.runner.state import OutputFolder
    from audiomill.sources.discover import discover_shards

    folder = OutputFolder(str(out))
    folder.create()
    processor = ShardProcessor(folder, stage, decode_workers=2)
    try:
        results = list(processor.run_shards(discover_shards(paths), False, lambda event: None))
    finally:
        processor.close()
    assert [r.status for r in results] == ["done"] * len(paths)
    return outputs(out)


def gpu_stage(model_dir: str, batch_seconds: float, pipeline: bool | None = None):
    from audiomill.codecs import load_codec
    from audiomill.stages.tokenize import TokenizeStage

    return TokenizeStage(load_codec("snac-24khz", model_dir, "cuda:0"), 10.0, 2.0, batch_seconds, pipeline=pipeline)


def test_codes_on_gpu_equal_upstream_snac_on_gpu(acceptance_shards, tiny_snac, tmp_path):
    """The whole command on the GPU (probe, encoding thread, pinned copies) against SNAC.encode per file."""
    from snac import SNAC

    out = tmp_path / "tokens"
    result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac,
                           "--devices", "0", "--chunk-seconds", "300", env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 3, result.stderr
    model = SNAC.from_pretrained(tiny_snac).eval().to("cuda:0")
    members = {}
    for path in acceptance_shards["paths"]:
        with tarfile.open(path) as archive:
            members.update((m.name, archive.extractfile(m).read()) for m in archive.getmembers() if m.isfile())
    same = total = 0
    for name in ("000001.jsonl", "000002.jsonl"):
        for record in read_jsonl(out / name):
            samples = decode(members[record["audio_file"]], 24000).samples
            with torch.inference_mode():
                expected = [level[0].tolist() for level in model.encode(torch.from_numpy(samples)[None, None].cuda())]
            assert [len(level) for level in record["tokens"]] == [len(level) for level in expected]
            for got, want in zip(record["tokens"], expected):
                same += sum(a == b for a, b in zip(got, want))
                total += len(want)
    # batches of several clips may pick other convolution kernels than one clip alone: allow a
    # rare code on a decision boundary to differ, and say how many did
    assert same / total >= 0.999, f"{same} of {total} codes identical"


def test_encoding_thread_on_gpu_gives_the_same_output_as_without(acceptance_shards, tiny_snac, tmp_path):
    with_thread = run_shards(tmp_path / "thread", acceptance_shards["paths"], gpu_stage(tiny_snac, 12.0, True))
    without = run_shards(tmp_path / "plain", acceptance_shards["paths"], gpu_stage(tiny_snac, 12.0, False))
    assert with_thread == without


def test_real_out_of_memory_halves_the_batch_and_the_codes_stay_the_same(acceptance_shards, tmp_path):
    """Real-size SNAC with device memory capped so that a 400 s batch cannot fit: the shards still complete."""
    from audiomill.codecs import codec_info
    from audiomill.codecs.snac import save_random

    model_dir = save_random(str(tmp_path / "snac"), dict(codec_info("snac-24khz").config))
    reference = run_shards(tmp_path / "reference", acceptance_shards["paths"], gpu_stage(model_dir, 20.0))
    stage = gpu_stage(model_dir, 400.0)
    torch.cuda.empty_cache()  # the cap counts memory the allocator keeps cached, too
    free, total = torch.cuda.mem_get_info(0)
    used = torch.cuda.memory_allocated(0)
    torch.cuda.set_per_process_memory_fraction((used + 3 * 2**30) / total, 0)  # 3 GB beyond the weights
    try:
        capped = run_shards(tmp_path / "capped", acceptance_shards["paths"], stage)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()
    assert stage.ooms > 0, "the cap did not cause an out-of-memory: lower it"
    assert stage.batcher.max_samples < 400 * 24000
    assert capped.keys() == reference.keys()
    same, total = identical_codes(capped, reference)
    assert same / total >= 0.999, f"{same} of {total} codes identical"  # other batch sizes, other conv kernels


def identical_codes(first: dict[str, bytes], second: dict[str, bytes]) -> tuple[int, int]:
    """How many codes of the records in ``second`` the records in ``first`` have at the same place."""
    same = total = 0
    for name, data in second.items():
        mine = {r["key"]: r for r in map(json.loads, first[name].splitlines())}
        for record in map(json.loads, data.splitlines()):
            if "tokens" not in record:
                continue
            for got, want in zip(mine[record["key"]]["tokens"], record["tokens"]):
                same += sum(a == b for a, b in zip(got, want))
                total += len(want)
    return same, total


def test_budget_probe_fits_free_memory_and_is_remembered(tiny_snac, tmp_path, monkeypatch):
    from audiomill.stages import budget

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    stage = gpu_stage(tiny_snac, 10.0)
    seconds = budget.probe_batch_seconds(stage)
    assert budget.MIN_SECONDS <= seconds <= budget.MAX_SECONDS
    remembered = json.loads(open(budget.cache_path()).read())
    assert list(remembered.values()) == [round(seconds, 1)]
    # a batch of the probed size fits
    rate = stage.codec.sample_rate
    clips = [torch.randn(int(min(seconds, 120) * rate)).numpy() * 0.1 for _ in range(max(1, int(seconds // 120)))]
    stage.encode_arrays(clips)
    assert budget.probe_batch_seconds(stage) == round(seconds, 1)  # from the cache, no second probe


def test_devices_all_gives_the_output_of_one_named_gpu(acceptance_shards, tiny_snac, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    outs = {}
    for devices in ("all", "0"):
        out = tmp_path / devices
        result = run_audiomill("tokenize", *acceptance_shards["paths"], "--out", str(out), "--model-path", tiny_snac,
                               "--devices", devices, *WINDOWS, "--batch-seconds", "12", env=env)
        assert result.returncode == 3, result.stderr
        outs[devices] = outputs(out)
    assert outs["all"] == outs["0"]
