"""The machinery every model stage shares: windows in, batched model calls, per-file outputs out.

Windows arrive as the decoders cut them, from many files at once. They are batched by
padded duration within buckets that keep each clip's result what it would be alone
(:meth:`BatchedModelStage.batch_key`), run through the model, and each file's results are
joined and turned into its output once its last window is done.

Out of memory is not an error: a batch that runs out is halved and retried, down to one
window, and a single window that still does not fit is run in shorter overlapping windows.
The budget for later batches shrinks to what fitted.

On a GPU the model runs one batch deep in a thread of its own: while batch N runs, the
calling thread writes the outputs of batch N-1 and gathers and uploads batch N+1 (pinned
memory, non-blocking copies), so the accelerator does not wait on Python between batches.

A subclass supplies the model call (:meth:`model`), how a batch's outputs split per clip
(:meth:`unbatch`), how a long file's window results join (:meth:`join`) and what a file's
joined result becomes (:meth:`finish`). A model that takes features rather than samples sets
:attr:`BatchedModelStage.featurizer` (see :mod:`audiomill.features`): the decoders compute them,
and a window then comes as :class:`~audiomill.features.Features`, which this class pads into
a batch but never cuts (one longer than a batch runs alone, whole).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiomill.batching import MAX_PADDING, DurationBatcher, Piece
from audiomill.chunking import Window, plan_windows
from audiomill.errors import UsageError
from audiomill.features import Features, collate
from audiomill.items import Item
from audiomill.stages import FailureGuard, FileOutput

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
INJECT_OOM_ENV = "AUDIOMILL_INJECT_OOM"  # "clips>N" or "samples>N": fail such model calls as out of memory


class InjectedOutOfMemory(RuntimeError):
    """Raised instead of running the model when AUDIOMILL_INJECT_OOM says so: an OOM that needs no GPU."""


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (InjectedOutOfMemory, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def parse_inject_oom(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    what, _, limit = spec.partition(">")
    if what.strip() not in ("clips", "samples") or not limit.strip().isdigit():
        raise UsageError(f"{INJECT_OOM_ENV}={spec!r}: expected clips>N or samples>N")
    return what.strip(), int(limit)


def _released(exc: BaseException) -> BaseException:
    """``exc`` without what keeps the failed call's memory alive: its traceback's frames (and
    those of the exceptions it chains). The message and type are all a retry needs."""
    seen = exc
    while seen is not None:
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    return exc


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
HEAP_THRESHOLD = 1 << 30


class HeapTrimmer:
    """Keep a CPU model's activations in glibc's heap, and give freed memory back to the system every
    few batches (CPU models only).

    glibc serves an allocation over its mmap threshold (at most 32 MB unless set) with a fresh
    mapping, unmapped when freed: a model whose activations are that large (real-size SNAC on a
    10 s window: 61 MB a layer) then faults in and zeroes every page of them on every call, which
    cost as much system time as the model's own (real-size SNAC 24 kHz, 2 cores: 3.0x real time,
    35 s of system time for 120 s of audio). With the mmap and trim thresholds at 1 GB the heap keeps
    them, and with torch's huge pages (``THP_MEM_ALLOC_ENABLE``, set in ``audiomill/__init__``) the
    same run is 5.7-6.8x real time with 5-6 s of system time (BENCHMARKS.md).

    The heap is then trimmed here instead: batches of ever-different shapes leave it fragmented, and
    without trims peak RSS creeps up (tiny SNAC, a 900 s file: 1.40x the peak of 20 short files). A
    trim hands the freed activations back, so the next batch faults them in again: trimming after
    every batch cost tiny DAC 24 kHz a quarter of its end-to-end speed on 120 s batches (38-41 audio
    s / s against 50-53 untrimmed). One trim every ``every`` batches keeps both: the 900 s file at
    1.1x and the cost spread over eight batches (BENCHMARKS.md, "The heap trim").
    """

    def __init__(self, enabled: bool, every: int = 8) -> None:
        self.every = every
        self._batches = 0
        self._trim = None
        if enabled:
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                self._trim = libc.malloc_trim
                libc.mallopt(M_MMAP_THRESHOLD, HEAP_THRESHOLD)  # refused (0) by a glibc that caps it: harmless
                libc.mallopt(M_TRIM_THRESHOLD, HEAP_THRESHOLD)
            except (OSError, AttributeError):
                self._trim = None

    def tidy(self) -> None:
        """After a batch, once its activations and outputs are freed."""
        if self._trim is None:
            return
        self._batches += 1
        if self._batches >= self.every:
            self._trim(0)
            self._batches = 0


@dataclass
class BatchCounts:
    """What the model calls were given: how full the batches were, and how much of them was padding."""

    batches: int = 0
    clips: int = 0
    samples: int = 0  # of the clips themselves
    padding: int = 0  # samples added to fill each batch to its longest clip
    repaired: int = 0  # samples encoded again to make padded clips exact

    def add(self, clips: list[np.ndarray], padded_length: int) -> None:
        real = sum(len(clip) for clip in clips)
        self.batches += 1
        self.clips += len(clips)
        self.samples += real
        self.padding += len(clips) * padded_length - real

    def summary(self) -> dict[str, float]:
        """``mean_batch_clips``, ``padding_fraction`` and ``repair_fraction`` (of the clips' samples)."""
        return {"model_calls": self.batches,
                "mean_batch_clips": round(self.clips / self.batches, 2) if self.batches else 0.0,
                "padding_fraction": round(self.padding / self.samples, 4) if self.samples else 0.0,
                "repair_fraction": round(self.repaired / self.samples, 4) if self.samples else 0.0}


@dataclass
class FileState:
    """One file's windows in flight: their results, and whether its last window has come."""

    ticket: int
    item: Item
    windows: dict[int, Window] = field(default_factory=dict)
    results: dict[int, Any] = field(default_factory=dict)
    count: int | None = None  # number of windows, known with the last one
    num_samples: int = 0
    done: bool = False  # its output has been returned


@dataclass
class Failed:
    """A window the model could not process, and why."""

    reason: str
    exc: BaseException | None = None


Computed = list[tuple[Piece, Any]]  # per window, its result or a Failed


class BatchedModelStage:
    """Batches windows by duration within result-preserving buckets, runs the model, joins per file."""

    name = "model"
    fields: dict[str, str] = {}
    # a picklable callable, samples -> the model's inputs, run in the decode processes (see audiomill.features)
    featurizer: Any = None
    # whether a window may be run as shorter overlapping windows, joined (too long for a batch, or out of
    # memory alone); a model whose result is not a join of its parts (a transcript) runs such a window whole
    cuttable = True

    def __init__(self, sample_rate: int, alignment: int, window_seconds: float, overlap_seconds: float,
                 batch_seconds: float, device: str = "cpu", precision: str = "fp32", compile: bool = False,
                 pipeline: bool | None = None, max_padding: float = MAX_PADDING) -> None:
        """``pipeline``: run the model in a thread of its own, one batch ahead (default: on a GPU only;
        on CPU the thread would only take cores from the model)."""
        import torch

        self.sample_rate = sample_rate
        self.alignment = alignment
        self.window = int(window_seconds * sample_rate) if window_seconds > 0 else 0
        self.overlap = int(overlap_seconds * sample_rate)
        self.batcher = DurationBatcher(max(1, int(batch_seconds * sample_rate)), max_padding=max_padding)
        self.device = torch.device(device)
        if precision not in PRECISIONS:
            raise UsageError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        if precision == "tf32" and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self._model_fn = torch.compile(self.model, dynamic=True) if compile else self.model
        # torch.compile traces SNAC's numpy scalars wrongly under inference_mode: no_grad is as good there
        self._grad_mode = torch.no_grad if compile else torch.inference_mode
        self._inject = parse_inject_oom(os.environ.get(INJECT_OOM_ENV))
        self._heap = HeapTrimmer(enabled=self.device.type == "cpu")
        self.guard = FailureGuard(self.name)
        self.ooms = 0
        self.counts = BatchCounts()
        self.pipeline = self.device.type == "cuda" if pipeline is None else pipeline
        self._encoder: ThreadPoolExecutor | None = None  # started with the first batch
        self._in_flight: deque[Future] = deque()
        # On CPU a window longer than a batch (run alone, for long) waits behind the batches that were
        # waiting when it came, run one a call: the short files decoded beside a long one are written first.
        self._deferred: deque[list[Piece] | Piece] = deque()

    # -- what a subclass supplies --------------------------------------------------------------

    def model(self, tensor, lengths) -> Any:
        """The model on a padded batch (``tensor [B, T]``, ``lengths [B]``, on the device)."""
        raise NotImplementedError

    def unbatch(self, clips: list[np.ndarray], outputs: Any) -> list[Any]:
        """Per clip, its result (on the CPU) without what the padding added."""
        raise NotImplementedError

    def batch_key(self, num_samples: int) -> int:
        """Clips with equal keys give the same results batched as alone (0: any clips batch)."""
        return 0

    def join(self, windows: list[Window], results: list[Any]) -> Any:
        """The results of a long file's windows as one (for a single window: its result)."""
        if len(results) != 1:
            raise NotImplementedError(f"{type(self).__name__} cannot join the results of several windows")
        return results[0]

    def finish(self, state: FileState, result: Any) -> FileOutput:
        """A file's output from its joined result."""
        raise NotImplementedError

    # -- the Stage protocol ----------------------------------------------------------------------

    def close(self) -> None:
        """Wait for the batch in the model (its outputs are dropped) and end the model thread."""
        if self._encoder is not None:
            self._encoder.shutdown(wait=True, cancel_futures=True)
            self._encoder = None
        self._in_flight.clear()

    @property
    def waiting(self) -> bool:
        return bool(self.batcher.pending or self._in_flight or self._deferred)

    def set_batch_seconds(self, seconds: float) -> None:
        self.batcher.max_samples = max(1, int(seconds * self.sample_rate))

    def begin(self, ticket: int, item: Item) -> FileState:
        return FileState(ticket, item)

    def add_window(self, state: FileState, number: int, window: Window, samples: np.ndarray, last: bool,
                   num_samples: int = 0) -> list[FileOutput]:
        """Queue one window of a file; returns the outputs of any batch this completes."""
        if state.done:
            return []
        state.windows[number] = window
        if last:
            state.count = number + 1
            state.num_samples = num_samples
        return self.queue(Piece(state, number, samples, self.batch_key(len(samples))))

    def queue(self, piece: Piece) -> list[FileOutput]:
        """Hand one clip to the batcher; the outputs of any batch this completes."""
        if len(piece.samples) > self.batcher.max_samples:
            # a window longer than a whole batch: run on its own, in batch-sized windows
            if self.pipeline:
                return self._run_oversized(piece)
            self._deferred.extend(self.batcher.flush())
            self._deferred.append(piece)
            return self._run_deferred()
        outputs: list[FileOutput] = []
        for batch in self.batcher.add(piece):
            outputs += self._run(batch)
        if self._deferred and not outputs:
            outputs = self._run_deferred()
        return outputs

    def fail(self, state: FileState, reason: str, exc: BaseException | None = None) -> list[FileOutput]:
        if state.done:
            return []
        state.done = True
        state.results.clear()
        return self.guard.failed(FileOutput(state.ticket, state.item, error=reason), exc)

    def flush(self, end: bool = False) -> list[FileOutput]:
        """Run the windows still waiting for their batch to fill; every output that is due. On CPU,
        unless ``end``, a call returns once a batch has given outputs, and what is left waits for the
        next call (the caller calls again while :attr:`waiting`): what is done is written first."""
        outputs: list[FileOutput] = []
        while self._deferred and (end or not outputs):
            outputs += self._run_deferred()
        for batch in self.batcher.flush():
            outputs += self._run(batch)
            if outputs and not end and not self.pipeline:
                break  # written now; what is left stays in the batcher (its look-ahead bounds it) for the next call
        outputs += self.drain()
        if end:
            outputs += self.guard.release()
        return outputs

    def _run_deferred(self) -> list[FileOutput]:
        job = self._deferred.popleft()
        return self._run(job) if isinstance(job, list) else self._run_oversized(job)

    def _run_oversized(self, piece: Piece) -> list[FileOutput]:
        if isinstance(piece.samples, Features) or not self.cuttable:  # run whole, alone
            return self._submit(lambda: self._run_splitting([piece]))
        longest = self.batcher.max_samples
        return self._submit(lambda: [(piece, self._run_windowed(piece.samples, longest))])

    def drain(self) -> list[FileOutput]:
        """The outputs of every batch already handed to the model thread."""
        outputs: list[FileOutput] = []
        while self._in_flight:
            outputs += self._take(self._in_flight.popleft().result())
        return outputs

    def run(self, decoded: Iterable[tuple[Item, Any]]) -> Iterator[list[FileOutput]]:
        """Whole decoded files (``(item, Audio or error reason)``) in, groups of outputs out."""
        for ticket, (item, audio) in enumerate(decoded):
            state = self.begin(ticket, item)
            if isinstance(audio, str):
                yield self.fail(state, audio)
                continue
            total = len(audio.samples)
            if total == 0:
                yield self.fail(state, "no audio samples")
                continue
            windows = plan_windows(total, self.window, self.overlap, self.alignment)
            for number, window in enumerate(windows):
                last = number == len(windows) - 1
                samples = audio.samples[window.start : window.end]
                outputs = self.add_window(state, number, window, samples, last, total if last else 0)
                if outputs:
                    yield outputs
        outputs = self.flush(end=True)
        if outputs:
            yield outputs

    # -- running the model -------------------------------------------------------------------

    def _run(self, batch: list[Piece]) -> list[FileOutput]:
        if not self.pipeline:
            return self._take(self._run_splitting(batch))
        try:  # the upload happens here, while the batch before is still in the model
            prepared = self.prepare([p.samples for p in batch])
        except Exception:  # out of memory already: the model thread splits the batch
            prepared = None
        upload = [prepared]  # handed over, not kept by the job: a failed batch's upload is freed before its retry
        del prepared
        return self._submit(lambda: self._run_splitting(batch, upload.pop()))

    def _submit(self, job: Callable[[], Computed]) -> list[FileOutput]:
        """Run ``job`` (a model call) now, or in the model thread while the one before is written."""
        if not self.pipeline:
            return self._take(job())
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(1, thread_name_prefix="audiomill-encode")
        self._in_flight.append(self._encoder.submit(job))
        outputs: list[FileOutput] = []
        while len(self._in_flight) > 1:
            outputs += self._take(self._in_flight.popleft().result())
        return outputs

    def _take(self, computed: Computed) -> list[FileOutput]:
        outputs: list[FileOutput] = []
        for piece, result in computed:
            outputs += self._keep(piece, result)
        return outputs

    def _keep(self, piece: Piece, result: Any) -> list[FileOutput]:
        """Store one window's result (or failure); the file's output once its last window is in."""
        state: FileState = piece.owner
        if state.done:
            return []
        if isinstance(result, Failed):
            return self.fail(state, result.reason, result.exc)
        state.results[piece.window] = result
        if state.count is None or len(state.results) < state.count:
            return []
        state.done = True
        count = state.count
        joined = self.join([state.windows[i] for i in range(count)], [state.results[i] for i in range(count)])
        state.results.clear()
        output = self.finish(state, joined)
        if not self.guard.succeeded:
            return self.guard.worked() + [output]
        return [output]

    def _run_splitting(self, batch: list[Piece], prepared: tuple | None = None) -> Computed:
        """Run a batch; on failure run each half, down to single windows, then shorter windows.

        The retry runs only once the failed call's tensors are released: the exception's
        traceback holds the frames that hold them (the padded batch, the activations), so it is
        dropped, with the upload, before anything runs again, and on a GPU the cache is emptied
        after that (:meth:`_after_oom`)."""
        clips = [p.samples for p in batch]
        try:
            return list(zip(batch, self._run_prepared(clips, prepared or self.prepare(clips))))
        except Exception as exc:
            failure: BaseException | None = exc
            oom = is_out_of_memory(exc)
        prepared = None
        if oom:
            failure = _released(failure)
            self._after_oom(batch)
        if len(batch) > 1:
            half = len(batch) // 2
            return self._run_splitting(batch[:half]) + self._run_splitting(batch[half:])
        if oom:
            return [(batch[0], self._run_shorter(batch[0].samples))]
        owner = batch[0].owner
        log.warning("%s failed on %s: %s", self.name, owner.item.key if owner is not None else "a window", failure)
        return [(batch[0], Failed(f"{self.name} failed: {type(failure).__name__}: {failure}", failure))]

    def _after_oom(self, batch: list[Piece]) -> None:
        import torch

        self.ooms += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        size = sum(len(p.samples) for p in batch)
        if len(batch) > 1 and size // 2 < self.batcher.max_samples:
            self.batcher.max_samples = max(1, size // 2)
            log.warning("out of memory on %.1f s of audio: batches are now at most %.1f s",
                        size / self.sample_rate, self.batcher.max_samples / self.sample_rate)

    def _run_shorter(self, samples: np.ndarray | Features) -> Any:
        """One window that does not fit: run it in overlapping windows half as long, and join."""
        if isinstance(samples, Features):
            return Failed(f"out of memory on one {len(samples) / self.sample_rate:.1f} s window (its features "
                          f"cannot be cut: a shorter --chunk-seconds would fit)")
        if not self.cuttable:
            return Failed(f"out of memory on one {len(samples) / self.sample_rate:.1f} s clip, alone")
        window = len(samples) // 2 // self.alignment * self.alignment
        if window < max(2 * self.alignment, self.sample_rate):
            return Failed(f"out of memory even on {len(samples) / self.sample_rate:.1f} s of audio")
        log.warning("out of memory on one %.1f s window: running it in %.1f s windows",
                    len(samples) / self.sample_rate, window / self.sample_rate)
        return self._run_windowed(samples, window)

    def _run_windowed(self, samples: np.ndarray, longest: int) -> Any:
        """Run ``samples`` in overlapping windows of at most ``longest`` samples, and join.

        The overlap is the configured one, but at most a quarter of the window, so that no
        more than a third of the work is repeated; results agree with one whole-window call
        as long as the model's receptive field is shorter than half of that overlap.
        """
        alignment = self.alignment
        window = max(alignment, longest // alignment * alignment)
        if len(samples) <= window:
            return self._run_splitting([Piece(None, 0, samples, 0)])[0][1]
        overlap = min(self.overlap, window // 4) // alignment * alignment
        windows = plan_windows(len(samples), window, overlap, alignment)
        results = []
        for sub in windows:
            part = self._run_splitting([Piece(None, 0, samples[sub.start : sub.end], 0)])[0][1]
            if isinstance(part, Failed):
                return part
            results.append(part)
        return self.join(windows, results)

    def encode_arrays(self, clips: list[np.ndarray]) -> list[Any]:
        """Run clips of one bucket in one call; per clip, its result."""
        return self._run_prepared(clips, self.prepare(clips))

    def prepare(self, clips: list[np.ndarray | Features]) -> tuple:
        """The batch as the model takes it (``wav [B, T]``, ``lengths [B]``), zero-padded (clips of a
        batch share a bucket: the model pads the rest itself), already on its way to the device. A
        model of a :attr:`featurizer`: its features (of each clip that came as samples, computed here), padded
        into a batch, a dict of tensors in place of ``wav``."""
        import torch

        if self.featurizer is not None:
            lengths = torch.tensor([len(c) for c in clips])
            shown = [c if isinstance(c, Features) else Features(len(c), self.featurizer(c)) for c in clips]
            inputs = {name: torch.from_numpy(array) for name, array in collate(shown, self.featurizer.padding).items()}
            if self.device.type == "cuda":
                inputs = {name: t.pin_memory().to(self.device, non_blocking=True) for name, t in inputs.items()}
                lengths = lengths.to(self.device, non_blocking=True)
            return inputs, lengths
        wav = np.zeros((len(clips), max(len(c) for c in clips)), dtype=np.float32)
        for row, clip in enumerate(clips):
            wav[row, : len(clip)] = clip
        tensor = torch.from_numpy(wav)
        lengths = torch.tensor([len(c) for c in clips])
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
            lengths = lengths.to(self.device, non_blocking=True)
        return tensor, lengths

    def encode_tensors(self, tensor, lengths) -> Any:
        """The model with this stage's precision and compilation; the outputs stay on the device."""
        import torch

        if self._inject is not None:
            what, limit = self._inject
            size = len(lengths) if what == "clips" else len(lengths) * int(lengths.max())  # padded samples
            if size > limit:
                raise InjectedOutOfMemory(f"CUDA out of memory (injected by {INJECT_OOM_ENV}: {what} {size} > {limit})")
        autocast = (torch.autocast(self.device.type, dtype=self._autocast) if self._autocast is not None
                    else contextlib.nullcontext())
        with self._grad_mode(), autocast:
            return self._model_fn(tensor, lengths)

    def _run_prepared(self, clips: list[np.ndarray], prepared: tuple) -> list[Any]:
        results = self.unbatch(clips, self.encode_tensors(*prepared))
        self.counts.add(clips, max(len(c) for c in clips))
        self._heap.tidy()  # the batch's activations and outputs are freed by now
        return results
