"""The thread <-> loop crossing: bounded, drop-oldest, counted, order-preserving, copying."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio.bridge import CaptureBridge, Frame, PlaybackQueue


def _frame(value: int, n: int = 4) -> Frame:
    return np.full(n, value, dtype=np.int16)


def _run_ready_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def test_capture_bridge_drops_oldest_and_counts() -> None:
    loop = asyncio.new_event_loop()
    try:
        got: list[Frame] = []
        bridge = CaptureBridge(loop, got.append, max_frames=3)
        for value in range(1, 6):  # the loop is not running: frames pile up
            bridge.push(_frame(value))
        _run_ready_callbacks(loop)
        assert [int(f[0]) for f in got] == [3, 4, 5]
        assert bridge.dropped == 2
    finally:
        loop.close()


def test_capture_bridge_delivers_in_order_on_the_loop_thread() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        got: list[tuple[int, int]] = []
        done = asyncio.Event()
        bridge = CaptureBridge(loop, lambda f: got.append((int(f[0]), threading.get_ident())), 500)

        def device_thread() -> None:
            for value in range(200):
                bridge.push(_frame(value))
            loop.call_soon_threadsafe(done.set)

        thread = threading.Thread(target=device_thread, name="fake-device")
        thread.start()
        await asyncio.wait_for(done.wait(), 5)
        thread.join()
        await asyncio.sleep(0)  # the set() may have overtaken the last drain
        assert [v for v, _ in got] == list(range(200))
        assert {ident for _, ident in got} == {threading.get_ident()}
        assert bridge.dropped == 0

    asyncio.run(body())


def test_capture_bridge_copies_the_pushed_buffer() -> None:
    loop = asyncio.new_event_loop()
    try:
        got: list[Frame] = []
        bridge = CaptureBridge(loop, got.append)
        buf = np.arange(8, dtype=np.int16)
        bridge.push(buf)
        buf[:] = 99  # a device thread reuses its buffer for the next period
        _run_ready_callbacks(loop)
        assert np.array_equal(got[0], np.arange(8))
    finally:
        loop.close()


def test_capture_bridge_push_after_loop_closed_is_silent() -> None:
    loop = asyncio.new_event_loop()
    bridge = CaptureBridge(loop, lambda f: None)
    loop.close()
    bridge.push(_frame(1))  # shutdown race: must not raise into the device thread


def test_playback_queue_drops_oldest_and_counts() -> None:
    q = PlaybackQueue(10)
    q.write(np.arange(1, 7, dtype=np.int16))
    q.write(np.arange(7, 13, dtype=np.int16))
    assert q.dropped_samples == 2
    assert q.queued == 10
    assert list(q.read(10)) == list(range(3, 13))


def test_playback_queue_write_larger_than_capacity_keeps_newest() -> None:
    q = PlaybackQueue(10)
    q.write(np.arange(1, 4, dtype=np.int16))
    q.write(np.arange(4, 19, dtype=np.int16))
    assert q.dropped_samples == 3 + 5
    assert list(q.read(10)) == list(range(9, 19))


def test_playback_queue_pads_with_silence_and_counts_only_partial_periods() -> None:
    q = PlaybackQueue(100)
    out = np.full(8, 77, dtype=np.int16)
    q.write(np.arange(1, 6, dtype=np.int16))
    assert list(q.read(8, out)) == [1, 2, 3, 4, 5, 0, 0, 0]
    assert q.underruns == 1
    assert list(q.read(8, out)) == [0] * 8  # idle, not an underrun
    assert q.underruns == 1
    q.write(np.arange(1, 9, dtype=np.int16))
    assert list(q.read(8, out)) == list(range(1, 9))
    assert q.underruns == 1


def test_playback_queue_clear() -> None:
    q = PlaybackQueue(10)
    q.write(np.ones(5, dtype=np.int16))
    q.clear()
    assert q.queued == 0
    assert not q.read(4).any()


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 40)),
        st.tuples(st.just("read"), st.integers(1, 40)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 64), ops=_ops)
def test_playback_queue_never_invents_samples_and_keeps_order(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    q = PlaybackQueue(capacity)
    next_value = 1  # samples are a running count, so order and loss are visible (never 0 = silence)
    delivered: list[int] = []
    for op, n in ops:
        if op == "write":
            q.write(np.arange(next_value, next_value + n, dtype=np.int16))
            next_value += n
        else:
            out = q.read(n)
            assert len(out) == n
            real = int(np.count_nonzero(out))
            assert not out[real:].any(), "silence only pads the end of a period"
            delivered.extend(int(v) for v in out[:real])
    written = next_value - 1
    assert len(delivered) <= written
    assert delivered == sorted(set(delivered)), "order kept, nothing repeated"
    assert len(delivered) + q.dropped_samples + q.queued == written
    # Drops are always of the oldest: what's still queued is the newest that was written.
    rest = q.read(q.queued) if q.queued else np.zeros(0, dtype=np.int16)
    assert list(rest) == list(range(written - len(rest) + 1, written + 1))
