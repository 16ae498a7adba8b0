"""Messages that must survive a broker outage: kept until the broker acknowledges them.

Alerts are the case: an emergency raised while the broker is away must reach the consoles once it is
back. The outbox is a pure, bounded queue: the control plane adds a message, hands the unsent ones to
paho when linked (:meth:`Outbox.sent` records the message id), and removes each when its PUBACK comes.
A lost link puts everything unacknowledged back in line, in its original order, for the next link
(delivery is at least once: the broker may have taken one whose PUBACK we never saw). Past
``capacity`` the oldest message is dropped and counted: the newest news matters most.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["Outbox"]


class Outbox:
    """A bounded queue of payloads awaiting their broker's acknowledgement."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an outbox holds at least one message, got capacity {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[int, bytes] = OrderedDict()
        """Every message not yet acknowledged, oldest first, by sequence number."""
        self._in_flight: dict[int, int] = {}
        """paho message id -> sequence number, for the messages handed to the current link."""
        self._sent: set[int] = set()
        self._next = 0
        self.dropped = 0
        """Messages dropped unsent (or unacknowledged) because the outbox was full."""
        self.delivered = 0
        """Messages the broker acknowledged."""
        self.rejected = 0
        """Messages the broker refused in its PUBACK (e.g. not authorised): dropped, not retried."""

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, payload: bytes) -> int:
        """Queue ``payload``; its sequence number. Drops the oldest message if full."""
        while len(self._entries) >= self.capacity:
            seq, _ = self._entries.popitem(last=False)
            self._forget(seq)
            self.dropped += 1
        seq = self._next
        self._next += 1
        self._entries[seq] = payload
        return seq

    def unsent(self) -> list[tuple[int, bytes]]:
        """(sequence number, payload) of every message not handed to the current link, oldest first."""
        return [(seq, payload) for seq, payload in self._entries.items() if seq not in self._sent]

    def sent(self, seq: int, mid: int) -> None:
        """Message ``seq`` was handed to paho as message id ``mid``."""
        if seq in self._entries:
            self._sent.add(seq)
            self._in_flight[mid] = seq

    def acked(self, mid: int, ok: bool = True) -> bool:
        """The broker acknowledged message id ``mid`` (``ok`` False: it refused it). True if ``mid``
        was one of ours; either way the message leaves the outbox."""
        seq = self._in_flight.pop(mid, None)
        if seq is None:
            return False
        self._sent.discard(seq)
        if self._entries.pop(seq, None) is not None:
            if ok:
                self.delivered += 1
            else:
                self.rejected += 1
        return True

    def link_lost(self) -> None:
        """The link ended: whatever it did not get acknowledged goes out again on the next one."""
        self._in_flight.clear()
        self._sent.clear()

    def _forget(self, seq: int) -> None:
        self._sent.discard(seq)
        for mid in [m for m, s in self._in_flight.items() if s == seq]:
            del self._in_flight[mid]
