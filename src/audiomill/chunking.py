"""Long audio in frame-aligned, overlapping windows, and the codes stitched back.

Every window starts on a multiple of the codec's alignment, so its frames line up
with the whole file's. Of the overlap between two windows, each keeps the half on
its own side: the codes kept are the ones computed farthest from a window edge,
and the stitched codes have exactly as many frames as encoding the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    start: int  # first sample fed to the codec
    end: int  # one past the last sample fed to the codec
    keep_start: int  # first sample whose codes come from this window
    keep_end: int  # one past the last such sample (the file's end for the last window)


def plan_windows(num_samples: int, window: int, overlap: int, alignment: int) -> list[Window]:
    """Windows covering ``num_samples``; a single window when the file fits in one (or window <= 0)."""
    if window <= 0 or num_samples <= window:
        return [Window(0, num_samples, 0, num_samples)]
    window = max(alignment, window // alignment * alignment)
    half = overlap // (2 * alignment) * alignment
    step = window - 2 * half
    if step <= 0:
        raise ValueError("the overlap must be shorter than the window")
    windows: list[Window] = []
    start = 0
    while True:
        end = min(start + window, num_samples)
        last = end >= num_samples
        keep_start = start + half if start > 0 else 0
        windows.append(Window(start, end, keep_start, num_samples if last else end - half))
        if last:
            return windows
        start += step


def stitch(windows: list[Window], codes: list[list[np.ndarray]], frame_hops: list[float]) -> list[np.ndarray]:
    """Join per-window codes (``codes[w][level]``, frames along the last axis) into whole-file codes.

    A hop may be fractional (EnCodec 48 kHz: 150 frames per 47,520-sample chunk); window
    offsets are multiples of the codec's alignment, hence whole numbers of frames.
    """
    if len(windows) == 1:
        return codes[0]
    levels: list[np.ndarray] = []
    for level, hop in enumerate(frame_hops):
        parts = []
        for number, (window, window_codes) in enumerate(zip(windows, codes)):
            first = round((window.keep_start - window.start) / hop)
            is_last = number == len(windows) - 1
            last = window_codes[level].shape[-1] if is_last else round((window.keep_end - window.start) / hop)
            parts.append(window_codes[level][..., first:last])
        levels.append(np.concatenate(parts, axis=-1))
    levels.extend(codes[0][len(frame_hops):])  # per-clip outputs (no frames): the first window's
    return levels


class Windower:
    """The windows of :func:`plan_windows`, cut from audio as it is decoded, block by block.

    The file's length is not known in advance: a window is cut once audio beyond its
    end has arrived (so it is not the last), and :meth:`finish` cuts the last one.
    Only the samples of the window being filled are held.
    """

    def __init__(self, window: int, overlap: int, alignment: int) -> None:
        self.limit = window  # files up to this length are one window
        self.window = max(alignment, window // alignment * alignment) if window > 0 else 0
        self.half = overlap // (2 * alignment) * alignment if window > 0 else 0
        if self.window and self.window - 2 * self.half <= 0:
            raise ValueError("the overlap must be shorter than the window")
        self._blocks: list[np.ndarray] = []
        self._buffer_start = 0  # absolute index of the first held sample
        self._held = 0
        self._start = 0  # start of the next window
        self.total = 0

    def push(self, block: np.ndarray) -> Iterator[tuple[Window, np.ndarray]]:
        self._blocks.append(block)
        self._held += len(block)
        self.total += len(block)
        while self.window and self.total > self._start + self.window and self.total > self.limit:
            start, end = self._start, self._start + self.window
            keep_start = start + self.half if start > 0 else 0
            yield Window(start, end, keep_start, end - self.half), self._take(start, end)
            self._start += self.window - 2 * self.half
            self._drop_before(self._start)

    def finish(self) -> Iterator[tuple[Window, np.ndarray]]:
        if self.total == 0:
            return
        start = self._start
        keep_start = start + self.half if start > 0 else 0
        yield Window(start, self.total, keep_start, self.total), self._take(start, self.total)
        self._blocks, self._held = [], 0

    def _take(self, start: int, end: int) -> np.ndarray:
        if len(self._blocks) > 1:
            self._blocks = [np.concatenate(self._blocks)]
        return self._blocks[0][start - self._buffer_start : end - self._buffer_start].copy()

    def _drop_before(self, position: int) -> None:
        drop = position - self._buffer_start
        if drop <= 0:
            return
        self._blocks = [np.concatenate(self._blocks)[drop:]] if self._blocks else []
        self._buffer_start = position
        self._held -= drop
