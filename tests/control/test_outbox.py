"""The alert outbox: bounded, in order, kept until acknowledged, resent after a lost link."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.control.outbox import Outbox


def _payloads(box: Outbox) -> list[bytes]:
    return [p for _, p in box.unsent()]


def test_messages_wait_in_order_until_acknowledged() -> None:
    box = Outbox(10)
    for p in (b"a", b"b", b"c"):
        box.add(p)
    assert len(box) == 3 and _payloads(box) == [b"a", b"b", b"c"]
    for mid, (seq, _) in enumerate(box.unsent(), start=100):
        box.sent(seq, mid)
    assert box.unsent() == [] and len(box) == 3  # handed to paho, not yet acknowledged
    assert box.acked(101) and len(box) == 2 and box.delivered == 1
    assert not box.acked(101) and not box.acked(999)  # not ours (any more)
    box.add(b"d")
    assert _payloads(box) == [b"d"]


def test_a_lost_link_puts_the_unacknowledged_back_in_line() -> None:
    box = Outbox(10)
    for p in (b"a", b"b", b"c"):
        box.add(p)
    for mid, (seq, _) in enumerate(box.unsent(), start=1):
        box.sent(seq, mid)
    box.acked(1)
    box.link_lost()
    assert _payloads(box) == [b"b", b"c"]
    assert not box.acked(2), "an id of the old link means nothing on the next"
    seq, _ = box.unsent()[0]
    box.sent(seq, 1)  # paho's ids start again on a new client
    assert box.acked(1) and _payloads(box) == [b"c"]


def test_full_outbox_drops_the_oldest_and_counts() -> None:
    box = Outbox(3)
    for i in range(5):
        box.add(bytes([i]))
    assert _payloads(box) == [b"\x02", b"\x03", b"\x04"] and box.dropped == 2


def test_dropping_an_in_flight_message_forgets_its_id() -> None:
    box = Outbox(2)
    seq = box.add(b"a")
    box.sent(seq, 7)
    box.add(b"b")
    box.add(b"c")  # drops "a", which was in flight
    assert box.dropped == 1 and not box.acked(7)
    assert _payloads(box) == [b"b", b"c"]


def test_a_refused_message_leaves_and_is_counted() -> None:
    box = Outbox(2)
    box.sent(box.add(b"a"), 1)
    assert box.acked(1, ok=False)
    assert len(box) == 0 and box.rejected == 1 and box.delivered == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Outbox(0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "send", "ack", "nack", "lost"]), st.integers(0, 5)),
                max_size=60))
def test_never_more_than_capacity_and_every_message_accounted_for(ops: list[tuple[str, int]]) -> None:
    box = Outbox(4)
    added, next_mid, in_flight = 0, 1, []
    for op, n in ops:
        if op == "add":
            box.add(b"x")
            added += 1
        elif op == "send":
            for seq, _ in box.unsent()[:n]:
                box.sent(seq, next_mid)
                in_flight.append(next_mid)
                next_mid += 1
        elif op in ("ack", "nack") and in_flight:
            box.acked(in_flight.pop(n % len(in_flight)), ok=op == "ack")
        elif op == "lost":
            box.link_lost()
            in_flight.clear()
        assert len(box) <= box.capacity
        assert added == len(box) + box.dropped + box.delivered + box.rejected
