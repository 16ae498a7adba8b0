"""Button contacts for the panel tests: MockFactory pins driven like a hand on a bouncing switch.

MockFactory does not simulate bounce, so the tests make it: several ``drive_low`` / ``drive_high``
toggles inside the debounce time, from a foreign thread as gpiozero's own would be.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gpiozero.pins.mock import MockFactory, MockPin


def pin(factory: MockFactory, number: int) -> MockPin:
    """The mock pin with BCM ``number``."""
    return factory.pin(number)


def bounce(p: MockPin, levels: str, gap_s: float = 0.0005) -> Callable[[], None]:
    """A contact pattern for a thread: 'L' drives low (pressed), 'H' high, with tiny gaps."""

    def play() -> None:
        for i, level in enumerate(levels):
            if i:
                time.sleep(gap_s)
            p.drive_low() if level == "L" else p.drive_high()

    return play


async def from_thread(play: Callable[[], None]) -> None:
    """Run a pin pattern on another thread, as gpiozero's callbacks would arrive."""
    await asyncio.to_thread(play)
