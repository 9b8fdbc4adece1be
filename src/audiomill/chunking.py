"""Long audio in frame-aligned, overlapping windows, and the codes stitched back.

Every window starts on a multiple of the codec's alignment, so its frames line up
with the whole file's. Of the overlap between two windows, each keeps the half on
its own side: the codes kept are the ones computed farthest from a window edge,
and the stitched codes have exactly as many frames as encoding the whole file.
"""

from __future__ import annotations

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


def stitch(windows: list[Window], codes: list[list[np.ndarray]], frame_hops: list[int]) -> list[np.ndarray]:
    """Join per-window codes (``codes[w][level]``, frames along the last axis) into whole-file codes."""
    if len(windows) == 1:
        return codes[0]
    levels: list[np.ndarray] = []
    for level, hop in enumerate(frame_hops):
        parts = []
        for number, (window, window_codes) in enumerate(zip(windows, codes)):
            first = (window.keep_start - window.start) // hop
            is_last = number == len(windows) - 1
            last = window_codes[level].shape[-1] if is_last else (window.keep_end - window.start) // hop
            parts.append(window_codes[level][..., first:last])
        levels.append(np.concatenate(parts, axis=-1))
    return levels
