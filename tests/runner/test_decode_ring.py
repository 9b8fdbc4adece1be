"""Windows reach the worker through shared memory: the same samples as decoding in-process,
through a ring that wraps many times, with windows too large for it sent pickled, and a ring
per replacement of a crashed decoder."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

from audiomill.corpus import encode_audio, speech
from audiomill.runner.decode import DecodePool, RingWriter, Task, WindowPlan, WindowRing, decode_task


def test_a_ring_gives_back_every_window_as_written_while_it_wraps():
    ring = WindowRing(1 << 16)  # 64 KiB: the windows below wrap it about fifty times
    writer = RingWriter(ring.path, ring.size, 0)
    rng = np.random.default_rng(1)
    for _ in range(400):
        samples = rng.standard_normal(int(rng.integers(1, 8000))).astype(np.float32)
        place = writer.put(samples)
        assert isinstance(place, tuple)
        assert np.array_equal(ring.take(place), samples)
    large = np.ones(ring.size // 4, np.float32)  # over half the ring: it goes in the message
    assert writer.put(large) is large
    ring.close()


def test_a_windows_features_of_several_types_and_shapes_go_through_the_ring():
    from audiomill.features import Features

    ring = WindowRing(1 << 16)
    writer = RingWriter(ring.path, ring.size, 0)
    rng = np.random.default_rng(2)
    for _ in range(200):  # odd byte counts (int8, int32 shapes) keep every array's start aligned all the same
        frames = int(rng.integers(1, 60))
        window = Features(frames * 320, {"input_features": rng.standard_normal((1, frames, 7)).astype(np.float32),
                                         "attention_mask": rng.integers(0, 2, (1, frames)).astype(np.int32),
                                         "flags": rng.integers(0, 9, (1, frames)).astype(np.int8)})
        sent = writer.put_window(window)
        assert all(isinstance(place, tuple) for place in sent.arrays.values())
        for name, place in sent.arrays.items():
            got = ring.take(place)
            assert got.dtype == window.arrays[name].dtype and np.array_equal(got, window.arrays[name])
    large = Features(1, {"a": np.ones(ring.size // 8, np.float32), "b": np.ones(ring.size // 8, np.float32)})
    assert writer.put_window(large) is large  # together over half the ring: in the message
    ring.close()


def _windows(pool: DecodePool, tickets: int) -> dict[int, list[np.ndarray]]:
    got: dict[int, list[np.ndarray]] = {t: [] for t in range(tickets)}
    done = 0
    deadline = time.time() + 120
    while done < tickets and time.time() < deadline:
        message = pool.get(0.2)
        if message is None:
            continue
        if message[0] == "window":
            got[message[1]].append(message[4])
        elif message[0] in ("done", "error"):
            done += 1
    assert done == tickets
    return got


def test_the_pool_sends_windows_through_shared_memory_and_a_replaced_decoder_gets_a_ring(tmp_path):
    paths = []
    for number, seconds in enumerate((3.0, 41.0, 7.5)):
        samples, rate = speech(seconds, seed=number)
        path = tmp_path / f"{number}.flac"
        path.write_bytes(encode_audio(samples, rate, "flac"))
        paths.append(str(path))
    plans = [WindowPlan(16000, 16000 * 10, 16000 * 2, 320), WindowPlan(24000, 0, 0, 1)]
    expected: dict[int, list[np.ndarray]] = {}
    for ticket, path in enumerate(paths):  # in this process, nothing shared
        expected[ticket] = []
        decode_task(Task(ticket, path, views=(0, 1)), plans,
                    lambda m, t=ticket: expected[t].append(m[4]) if m[0] == "window" else None)
    pool = DecodePool(2, plans)
    try:
        for ticket, path in enumerate(paths):
            pool.submit(Task(ticket, path, views=(0, 1)))
        got = _windows(pool, len(paths))
        assert pool.shared_windows == sum(len(w) for w in expected.values())  # every one through a ring
        for ticket in expected:
            assert len(got[ticket]) == len(expected[ticket])
            for a, b in zip(got[ticket], expected[ticket]):
                assert np.array_equal(a, b)
        # killed at any moment (here: just as it begins a file) a decoder breaks only its own pipes:
        # its file is an error, the task it had not begun goes to its replacement, which has a ring of its own
        feeder = threading.Thread(target=lambda: [pool.submit(Task(t, paths[1], views=(0,))) for t in range(10, 16)])
        feeder.start()  # (submit waits while each decoder has its depth of tasks, as the runner's feeder thread does)
        worker = _begun(pool, 10)
        os.kill(pool.pids()[worker], signal.SIGKILL)
        got = _windows_for(pool, set(range(10, 16)), crashed={10})
        feeder.join()
        assert len(pool._rings) == 3
        for ticket in range(11, 16):
            assert len(got[ticket]) == len(expected[1]) - 1  # view 0's windows (view 1 is the whole file)
            for a, b in zip(got[ticket], expected[1]):
                assert np.array_equal(a, b)
    finally:
        pool.close()


def _begun(pool: DecodePool, ticket: int) -> int:
    deadline = time.time() + 60
    while time.time() < deadline:
        message = pool.get(0.2)
        if message is not None and message[0] == "begin" and message[2] == ticket:
            return message[1]
    raise AssertionError("the decoder never took the task")


def _windows_for(pool: DecodePool, tickets: set[int], crashed: set[int] = frozenset()) -> dict[int, list[np.ndarray]]:
    got: dict[int, list[np.ndarray]] = {t: [] for t in tickets}
    left = set(tickets)
    deadline = time.time() + 120
    while left and time.time() < deadline:
        message = pool.get(0.2)
        if message is not None and message[1] in left:
            if message[0] == "window":
                got[message[1]].append(message[4])
            elif message[0] in ("done", "error"):
                if message[1] in crashed:
                    assert message[0] == "error" and "the decoder crashed on this file (signal 9)" in message[2]
                else:
                    assert message[0] == "done", message
                left.discard(message[1])
    assert not left
    return got
