"""Keep Python's cycle collector from pausing the audio while the box runs.

A full (generation 2) collection walks every container object the process holds, with the GIL held:
every thread stops, the device threads included. After start-up the daemon holds about 160 000 of
them (the imported modules, numba's compiled DSP code, the configuration), and a full pass over
those took 37-69 ms on the development VM (2 cores; it varies run to run), several times that on a
Pi; in a test process holding the objects of a thousand earlier tests it took 245 ms, a hole in
every port's playback and a backlog of captured frames. Those start-up objects live as long as the
process, so there is nothing to find among them: :func:`frozen_heap` moves everything the process
holds, before any audio flows, into the permanent generation (:func:`gc.freeze`, which costs
nothing), where collections no longer look. Objects made afterwards are collected as usual, and
those passes stay short. It does not collect first (that would be the very pause, in a test process
a quarter of a second per app): the little start-up garbage frozen with the rest waits until the
heap is unfrozen.

Several apps in one process (tests, the simulated site) each enter it; the heap is unfrozen
(:func:`gc.unfreeze`, back into the oldest generation) when the last one leaves, so a test process
does not keep the cyclic garbage of its finished apps forever.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

_lock = threading.Lock()
_holders = 0


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the heap for the body of the ``with`` (re-entrant, counted)."""
    global _holders
    with _lock:
        gc.freeze()
        _holders += 1
        log.debug("heap frozen: %d objects out of the collector's reach", gc.get_freeze_count())
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.unfreeze()
