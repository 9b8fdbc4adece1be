from __future__ import annotations

import numpy as np
import pytest

from audiomill.chunking import plan_windows, stitch


@pytest.mark.parametrize("num_samples", [1, 2047, 2048, 10_000, 99_999, 100_000, 250_001])
def test_windows_tile_the_file_and_stitch_to_the_whole_length(num_samples):
    alignment, hops = 2048, [2048, 1024, 512]
    windows = plan_windows(num_samples, window=20_000, overlap=8192, alignment=alignment)
    assert windows[0].keep_start == 0 and windows[-1].keep_end == num_samples
    for before, after in zip(windows, windows[1:]):
        assert before.keep_end == after.keep_start
        assert after.start % alignment == 0 and before.end - after.start >= 4096
    padded = -(-num_samples // alignment) * alignment
    # fake codes: each frame's code is its absolute frame index, so stitching must reproduce 0..N-1
    codes = []
    for w in windows:
        length = -(-(w.end - w.start) // alignment) * alignment
        codes.append([np.arange(w.start // h, (w.start + length) // h) for h in hops])
    stitched = stitch(windows, codes, hops)
    for level, hop in zip(stitched, hops):
        assert level.tolist() == list(range(padded // hop))


def test_no_windows_when_the_file_fits_or_chunking_is_off():
    assert len(plan_windows(1000, 2000, 100, 256)) == 1
    assert len(plan_windows(10**7, 0, 0, 256)) == 1


def test_overlap_as_long_as_the_window_is_refused():
    with pytest.raises(ValueError):
        plan_windows(100_000, 4096, 8192, 2048)
