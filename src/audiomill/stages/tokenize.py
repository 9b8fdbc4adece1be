"""The tokenize stage: codec-rate windows in, codec codes out, one record per file.

Windows arrive as the decoders cut them (see :mod:`audiomill.runner.decode`), from
many files at once. They are batched by duration within codes-preserving buckets,
encoded, and each file's codes are stitched and turned into its record once its
last window is encoded.

Out of memory is not an error: a batch that runs out is halved and retried, down
to one window, and a single window that still does not fit is encoded in shorter
overlapping windows. The budget for later batches shrinks to what fitted.

On a GPU the encoding runs one batch deep in a thread of its own: while batch N is
encoded, the calling thread writes the outputs of batch N-1 and gathers and uploads
batch N+1, so the accelerator does not wait on Python between batches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiomill.batching import DurationBatcher, Piece
from audiomill.chunking import Window, plan_windows, stitch
from audiomill.codecs import Codec
from audiomill.errors import UsageError
from audiomill.items import Item
from audiomill.stages import Output

log = logging.getLogger(__name__)

RESERVED = ("key", "tar_file", "audio_file", "num_samples", "sample_rate", "codec", "tokens", "token_shape", "error")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
INJECT_OOM_ENV = "AUDIOMILL_INJECT_OOM"  # "clips>N" or "samples>N": fail such encode calls as out of memory


class InjectedOutOfMemory(RuntimeError):
    """Raised instead of encoding when AUDIOMILL_INJECT_OOM says so: an OOM that needs no GPU."""


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


class HeapTrimmer:
    """Give freed activation memory back to the system now and then (CPU encoders only).

    Batches of ever-different shapes leave glibc's heap fragmented: without this,
    peak RSS creeps up with the number of batches. A trim every 0.25 s costs nothing
    measurable (300 files: 22.1 s against 22.6 s wall at 1 s) and keeps the 300-file peak
    at 1.13x the 20-file one (1.30-1.50x at 1 s, depending on how fast batches come);
    trimming after every batch (or mmap for every tensor) costs a third of the speed.
    """

    def __init__(self, enabled: bool, every: float = 0.25) -> None:
        self.every = every
        self._last = 0.0
        self._trim = None
        if enabled:
            try:
                import ctypes

                self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                self._trim = None

    def tidy(self) -> None:
        if self._trim is None:
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._trim(0)
            self._last = time.monotonic()


@dataclass
class FileState:
    """One file's windows in flight: their codes, and whether its last window has come."""

    item: Item
    windows: dict[int, Window] = field(default_factory=dict)
    codes: dict[int, list[np.ndarray]] = field(default_factory=dict)
    count: int | None = None  # number of windows, known with the last one
    num_samples: int = 0
    done: bool = False  # its record or error has been output


Encoded = list[tuple[Piece, "list[np.ndarray] | str"]]  # per window, its codes per level or why it failed


def make_record(item: Item, codec_name: str, sample_rate: int, num_samples: int, tokens: list[list[int]],
                clip_outputs: dict[str, list[int]] | None = None) -> dict:
    record: dict[str, Any] = {
        "key": item.key,
        "tar_file": item.source,
        "audio_file": item.audio_file,
        "num_samples": num_samples,
        "sample_rate": sample_rate,
        "codec": codec_name,
        "tokens": tokens,
        "token_shape": [len(level) for level in tokens],
        **(clip_outputs or {}),
    }
    reserved = set(RESERVED) | set(clip_outputs or ())
    clashes = {k: v for k, v in item.meta.items() if k in reserved}
    record.update((k, v) for k, v in item.meta.items() if k not in reserved)
    if clashes:
        record["meta"] = clashes
    return record


class TokenizeStage:
    """Batches windows by duration within codes-preserving buckets, encodes, stitches."""

    def __init__(
        self,
        codec: Codec,
        window_seconds: float,
        overlap_seconds: float,
        batch_seconds: float,
        precision: str = "fp32",
        compile: bool = False,
        pipeline: bool | None = None,
    ) -> None:
        """``pipeline``: encode in a thread of its own, one batch ahead (default: on a GPU only;
        on CPU the thread would only take cores from the encoder)."""
        import torch

        self.codec = codec
        self.clip_fields = tuple(getattr(codec, "clip_fields", ()))
        rate = codec.sample_rate
        self.window = int(window_seconds * rate) if window_seconds > 0 else 0
        self.overlap = int(overlap_seconds * rate)
        self.batcher = DurationBatcher(max(1, int(batch_seconds * rate)))
        self.device = torch.device(getattr(codec, "device", "cpu"))
        if precision not in PRECISIONS:
            raise UsageError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        if precision == "tf32" and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self._encode_fn = torch.compile(codec.encode, dynamic=True) if compile else codec.encode
        # torch.compile traces SNAC's numpy scalars wrongly under inference_mode: no_grad is as good there
        self._grad_mode = torch.no_grad if compile else torch.inference_mode
        self._inject = parse_inject_oom(os.environ.get(INJECT_OOM_ENV))
        self._heap = HeapTrimmer(enabled=self.device.type == "cpu")
        self.ooms = 0
        self.pipeline = self.device.type == "cuda" if pipeline is None else pipeline
        self._encoder: ThreadPoolExecutor | None = None  # started with the first batch
        self._in_flight: deque[Future] = deque()

    def close(self) -> None:
        """Wait for the batch being encoded (its outputs are dropped) and end the encoding thread."""
        if self._encoder is not None:
            self._encoder.shutdown(wait=True, cancel_futures=True)
            self._encoder = None
        self._in_flight.clear()

    @property
    def waiting(self) -> bool:
        """Windows wait for their batch to fill, or encoded windows for their outputs."""
        return bool(self.batcher.pending or self._in_flight)

    def set_batch_seconds(self, seconds: float) -> None:
        self.batcher.max_samples = max(1, int(seconds * self.codec.sample_rate))

    # -- windows in, outputs out -------------------------------------------------------------

    def begin(self, item: Item) -> FileState:
        return FileState(item)

    def add_window(
        self, state: FileState, number: int, window: Window, samples: np.ndarray, last: bool, num_samples: int = 0
    ) -> list[Output]:
        """Queue one window of a file; returns the outputs of any batch this completes."""
        if state.done:
            return []
        state.windows[number] = window
        if last:
            state.count = number + 1
            state.num_samples = num_samples
        piece = Piece(state, number, samples, self.codec.batch_key(len(samples)))
        if len(samples) > self.batcher.max_samples:
            # a window longer than a whole batch: encoded on its own, in batch-sized windows
            longest = self.batcher.max_samples
            return self._submit(lambda: [(piece, self._encode_windowed(samples, longest))])
        outputs: list[Output] = []
        for batch in self.batcher.add(piece):
            outputs += self._encode(batch)
        return outputs

    def fail(self, state: FileState, reason: str) -> list[Output]:
        if state.done:
            return []
        state.done = True
        return [Output(state.item, error=reason)]

    def flush(self) -> list[Output]:
        """Encode every window still waiting for its batch to fill; every output that is due."""
        outputs: list[Output] = []
        for batch in self.batcher.flush():
            outputs += self._encode(batch)
        return outputs + self.drain()

    def drain(self) -> list[Output]:
        """The outputs of every batch already handed to the encoding thread."""
        outputs: list[Output] = []
        while self._in_flight:
            outputs += self._take(self._in_flight.popleft().result())
        return outputs

    def run(self, decoded: Iterable[tuple[Item, Any]]) -> Iterator[list[Output]]:
        """Whole decoded files (``(item, Audio or error reason)``) in, groups of outputs out."""
        for item, audio in decoded:
            state = self.begin(item)
            if isinstance(audio, str):
                yield self.fail(state, audio)
                continue
            total = len(audio.samples)
            if total == 0:
                yield self.fail(state, "no audio samples")
                continue
            windows = plan_windows(total, self.window, self.overlap, self.codec.alignment)
            for number, window in enumerate(windows):
                last = number == len(windows) - 1
                samples = audio.samples[window.start : window.end]
                outputs = self.add_window(state, number, window, samples, last, total if last else 0)
                if outputs:
                    yield outputs
        outputs = self.flush()
        if outputs:
            yield outputs

    # -- encoding ----------------------------------------------------------------------------

    def _encode(self, batch: list[Piece]) -> list[Output]:
        if not self.pipeline:
            return self._take(self._encode_splitting(batch))
        try:  # the upload happens here, while the batch before is still encoding
            prepared = self.prepare([p.samples for p in batch])
        except Exception:  # out of memory already: the encoding thread splits the batch
            prepared = None
        return self._submit(lambda: self._encode_splitting(batch, prepared))

    def _submit(self, job: Callable[[], Encoded]) -> list[Output]:
        """Run ``job`` (an encode) now, or in the encoding thread while the one before is written."""
        if not self.pipeline:
            return self._take(job())
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(1, thread_name_prefix="audiomill-encode")
        self._in_flight.append(self._encoder.submit(job))
        outputs: list[Output] = []
        while len(self._in_flight) > 1:
            outputs += self._take(self._in_flight.popleft().result())
        return outputs

    def _take(self, encoded: Encoded) -> list[Output]:
        outputs: list[Output] = []
        for piece, codes in encoded:
            outputs += self._keep(piece, codes)
        return outputs

    def _keep(self, piece: Piece, codes: list[np.ndarray] | str) -> list[Output]:
        """Store one window's codes (or failure); the file's output once its last window is in."""
        state: FileState = piece.owner
        if state.done:
            return []
        if isinstance(codes, str):
            return self.fail(state, codes)
        state.codes[piece.window] = codes
        if state.count is not None and len(state.codes) == state.count:
            return [self._finish(state)]
        return []

    def _encode_splitting(self, batch: list[Piece], prepared: tuple | None = None) -> Encoded:
        """Encode a batch; on failure encode each half, down to single windows, then shorter windows."""
        try:
            clips = [p.samples for p in batch]
            return list(zip(batch, self._encode_prepared(clips, prepared or self.prepare(clips))))
        except Exception as exc:
            oom = is_out_of_memory(exc)
            if oom:
                self._after_oom(batch)
            if len(batch) > 1:
                half = len(batch) // 2
                return self._encode_splitting(batch[:half]) + self._encode_splitting(batch[half:])
            if oom:
                return [(batch[0], self._encode_shorter(batch[0].samples))]
            owner = batch[0].owner
            log.warning("encoding %s failed: %s", owner.item.key if owner is not None else "a window", exc)
            return [(batch[0], f"encoding failed: {type(exc).__name__}: {exc}")]

    def _after_oom(self, batch: list[Piece]) -> None:
        import torch

        self.ooms += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        size = sum(len(p.samples) for p in batch)
        if len(batch) > 1 and size // 2 < self.batcher.max_samples:
            self.batcher.max_samples = max(1, size // 2)
            log.warning("out of memory on %.1f s of audio: batches are now at most %.1f s",
                        size / self.codec.sample_rate, self.batcher.max_samples / self.codec.sample_rate)

    def _encode_shorter(self, samples: np.ndarray) -> list[np.ndarray] | str:
        """One window that does not fit: encode it in overlapping windows half as long, and stitch."""
        window = len(samples) // 2 // self.codec.alignment * self.codec.alignment
        if window < max(2 * self.codec.alignment, self.codec.sample_rate):
            return f"out of memory even on {len(samples) / self.codec.sample_rate:.1f} s of audio"
        log.warning("out of memory on one %.1f s window: encoding it in %.1f s windows",
                    len(samples) / self.codec.sample_rate, window / self.codec.sample_rate)
        return self._encode_windowed(samples, window)

    def _encode_windowed(self, samples: np.ndarray, longest: int) -> list[np.ndarray] | str:
        """Encode ``samples`` in overlapping windows of at most ``longest`` samples, and stitch.

        The overlap is the configured one, but at most a quarter of the window, so that no
        more than a third of the work is repeated; codes agree with one whole-window encode
        as long as the codec's receptive field is shorter than half of that overlap.
        """
        alignment = self.codec.alignment
        window = max(alignment, longest // alignment * alignment)
        if len(samples) <= window:
            return self._encode_splitting([Piece(None, 0, samples, 0)])[0][1]
        overlap = min(self.overlap, window // 4) // alignment * alignment
        windows = plan_windows(len(samples), window, overlap, alignment)
        codes = []
        for sub in windows:
            part = self._encode_splitting([Piece(None, 0, samples[sub.start : sub.end], 0)])[0][1]
            if isinstance(part, str):
                return part
            codes.append(part)
        return stitch(windows, codes, self.codec.frame_hops())

    def encode_arrays(self, clips: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Encode clips of one bucket in one call; per clip, its codes per level (frames last)."""
        return self._encode_prepared(clips, self.prepare(clips))

    def prepare(self, clips: list[np.ndarray]) -> tuple:
        """The batch as the codec takes it (``wav [B, T]``, ``lengths [B]``), zero-padded (clips of a
        batch share a bucket: the codec pads the rest itself), already on its way to the device."""
        import torch

        wav = np.zeros((len(clips), max(len(c) for c in clips)), dtype=np.float32)
        for row, clip in enumerate(clips):
            wav[row, : len(clip)] = clip
        tensor = torch.from_numpy(wav)
        lengths = torch.tensor([len(c) for c in clips])
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
            lengths = lengths.to(self.device, non_blocking=True)
        return tensor, lengths

    def encode_tensors(self, tensor, lengths) -> list:
        """The codec's encode with this stage's precision and compilation; the codes stay on the device."""
        import torch

        if self._inject is not None:
            what, limit = self._inject
            size = len(tensor) if what == "clips" else tensor.numel()
            if size > limit:
                raise InjectedOutOfMemory(f"CUDA out of memory (injected by {INJECT_OOM_ENV}: {what} {size} > {limit})")
        autocast = (torch.autocast(self.device.type, dtype=self._autocast) if self._autocast is not None
                    else contextlib.nullcontext())
        with self._grad_mode(), autocast:
            return self._encode_fn(tensor, lengths)

    def unbatch(self, clips: list[np.ndarray], codes: list) -> list[list[np.ndarray]]:
        """Per clip, its codes per level without the padding's frames."""
        arrays = [level.cpu().numpy() for level in codes]
        results = []
        for row, clip in enumerate(clips):
            frames = self.codec.num_frames(len(clip))
            results.append([arrays[level][row, ..., : frames[level]] if level < len(frames) else arrays[level][row]
                            for level in range(len(arrays))])
        return results

    def _encode_prepared(self, clips: list[np.ndarray], prepared: tuple) -> list[list[np.ndarray]]:
        results = self.unbatch(clips, self.encode_tensors(*prepared))
        self._heap.tidy()  # the batch's activations and codes are freed by now
        return results

    def _finish(self, state: FileState) -> Output:
        state.done = True
        count = state.count or 0
        windows = [state.windows[i] for i in range(count)]
        hops = self.codec.frame_hops()
        levels = stitch(windows, [state.codes[i] for i in range(count)], hops)
        clip_outputs = {name: levels[len(hops) + i].tolist() for i, name in enumerate(self.clip_fields)}
        tokens: list[list[int]] = []
        for level in levels[:len(hops)]:
            if level.ndim == 1:
                tokens.append(level.tolist())
            else:  # [codebooks, frames]: one list per codebook
                tokens.extend(row.tolist() for row in level)
        record = make_record(state.item, self.codec.name, self.codec.sample_rate, state.num_samples, tokens,
                             clip_outputs)
        state.codes.clear()
        return Output(state.item, record=record, audio_seconds=state.num_samples / self.codec.sample_rate)
