"""The heap frozen while apps run: start-up objects out of the collector's reach, new ones not."""

from __future__ import annotations

import gc
import weakref

from gateway.system.heap import frozen_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector can free it


def _cycle() -> weakref.ref[_Node]:
    return weakref.ref(_Node())


def test_what_existed_before_is_not_scanned_and_what_comes_after_is() -> None:
    before = _cycle()
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        during = _cycle()
        gc.collect()
        assert before() is not None  # frozen: a full collection did not even look at it
        assert during() is None  # made while running: collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert before() is None  # unfrozen on the way out: its garbage is not kept forever


def test_the_heap_stays_frozen_until_the_last_holder_leaves() -> None:
    with frozen_heap():
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0  # the outer app still runs
    assert gc.get_freeze_count() == 0
