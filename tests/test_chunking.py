from __future__ import annotations

import numpy as np
import pytest

from audiomill.chunking import Windower, plan_windows, stitch


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


@pytest.mark.parametrize("num_samples", [1, 999, 20_000, 20_001, 20_480, 20_481, 61_440, 100_003, 250_000])
@pytest.mark.parametrize("block", [1000, 4096, 77_777])
def test_windower_cuts_the_planned_windows_from_a_stream(num_samples, block):
    signal = np.arange(num_samples, dtype=np.float32)
    windower = Windower(window=20_000, overlap=8192, alignment=2048)
    cut = []
    for start in range(0, num_samples, block):
        cut.extend(windower.push(signal[start : start + block]))
    cut.extend(windower.finish())
    planned = plan_windows(num_samples, window=20_000, overlap=8192, alignment=2048)
    assert [w for w, _ in cut] == planned
    for window, samples in cut:
        np.testing.assert_array_equal(samples, signal[window.start : window.end])


def test_windower_holds_one_window_not_the_file():
    windower = Windower(window=20_000, overlap=8192, alignment=2048)
    for _ in range(200):
        list(windower.push(np.zeros(4096, np.float32)))
        assert windower._held <= 20_000 + 4096
    assert windower.total == 200 * 4096
