"""An out-of-memory retry runs only after the failed call's memory is released: nothing of the
failed batch (its padded upload, what the model made of it) is still alive when the halves run.

A real model stage on the real batching path; the model raises torch's own OutOfMemoryError
from deep inside a call (as a CUDA allocation would), with the batch's tensors on its frames."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from audiomill.audio import Audio
from audiomill.items import Item
from audiomill.stages import FileOutput
from audiomill.stages.batched import BatchedModelStage

RATE = 8000


class Fragile(BatchedModelStage):
    """Sums each clip; a call of more than one clip runs out of memory after making activations."""

    name = "fragile"
    fields = {"key": "string", "total": "float64"}

    def __init__(self, pipeline: bool) -> None:
        super().__init__(RATE, 1, 0.0, 0.0, 100.0, pipeline=pipeline)
        self.failed: list[weakref.ref] = []  # the tensors of every call that ran out of memory
        self.alive_at_retry: list[int] = []

    def model(self, tensor, lengths):
        self.alive_at_retry.append(sum(ref() is not None for ref in self.failed))
        activations = tensor * 2.0  # what a model holds when the allocation fails
        if len(tensor) > 1:
            self.failed += [weakref.ref(tensor), weakref.ref(activations)]
            self._allocate(activations)
        return activations.sum(dim=1)

    @staticmethod
    def _allocate(activations):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def unbatch(self, clips, outputs):
        return [float(v) for v in outputs.cpu()]

    def finish(self, state, result):
        return FileOutput(state.ticket, state.item, [{"key": state.item.key, "total": result}])


@pytest.mark.parametrize("pipeline", [False, True], ids=["inline", "model-thread"])
def test_the_halves_run_after_the_failed_batchs_tensors_are_freed(pipeline):
    stage = Fragile(pipeline)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(RATE * n).astype(np.float32) for n in (1, 2, 1, 3)]
    files = [(Item(key=f"c{i}", source="-", audio_file=f"c{i}.wav", index=i), Audio(c, RATE, RATE, 1))
             for i, c in enumerate(clips)]
    try:
        outputs = sorted((o for group in stage.run(files) for o in group), key=lambda o: o.ticket)
    finally:
        stage.close()
    assert [o.error for o in outputs] == [None] * 4
    assert [o.records[0]["total"] for o in outputs] == pytest.approx([2 * float(c.sum()) for c in clips], rel=1e-5)
    assert stage.ooms >= 1 and len(stage.failed) >= 2
    assert stage.alive_at_retry[0] == 0 and max(stage.alive_at_retry) == 0, stage.alive_at_retry
