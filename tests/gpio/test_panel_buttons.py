"""The group-select and emergency buttons on gpiozero's MockFactory.

Select: one ``on_select`` per debounced press, on the press edge. Emergency: one ``on_emergency``
once the debounced press has lasted ``emergency_hold_ms``, none for a shorter press, no repeat
while held. Most tests shorten the hold to HOLD_MS so they stay quick; the proportions of the
default 1.5 s are kept (released at 1 s -> 2/3 of it, held 5 s -> 5x).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import gpiozero
import pytest
from gpiozero.exc import GPIOPinInUse
from gpiozero.pins.mock import MockFactory

from gateway.config import GpioSettings, PortSettings
from gateway.gpio.panel import GpioError, Panel
from tests.gpio.contacts import bounce, from_thread, pin

DEBOUNCE_MS = 50
HOLD_MS = 200
HOLD_S = HOLD_MS / 1000
SETTLE_S = 3 * DEBOUNCE_MS / 1000  # long enough for any stray event to have shown up
POWER, A_PTT, A_SEL, A_EMG, B_PTT, B_SEL, B_EMG = 5, 17, 6, 13, 27, 19, 26

SETTINGS = GpioSettings(pin_factory="mock", power_led_pin=POWER, debounce_ms=DEBOUNCE_MS,
                        emergency_hold_ms=HOLD_MS)
PORT_A = PortSettings(name="a", ptt_pin=A_PTT, select_pin=A_SEL, emergency_pin=A_EMG)
PORT_B = PortSettings(name="b", ptt_pin=B_PTT, select_pin=B_SEL, emergency_pin=B_EMG)


def now() -> float:
    """The running loop's clock, which the panel times buttons with."""
    return asyncio.get_running_loop().time()


@dataclass
class Calls:
    """Collects on_select / on_emergency calls with the loop time and thread they arrived on."""

    loop: asyncio.AbstractEventLoop
    ports: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def __call__(self, port: str) -> None:
        self.ports.append(port)
        self.times.append(self.loop.time())
        self.threads.add(threading.get_ident())
        self.queue.put_nowait(port)

    async def next(self, timeout_s: float = 2.0) -> str:
        return await asyncio.wait_for(self.queue.get(), timeout_s)


@dataclass
class Rig:
    panel: Panel
    select: Calls
    emergency: Calls
    ptt: list[tuple[str, bool]]


@asynccontextmanager
async def started(
    factory: MockFactory,
    settings: GpioSettings = SETTINGS,
    ports: Sequence[PortSettings] = (PORT_A, PORT_B),
    held: Sequence[int] = (),
) -> AsyncIterator[Rig]:
    """A started panel; the ``held`` pins are pressed before start (after the claim's pull-up)."""
    loop = asyncio.get_running_loop()
    panel = Panel(settings, ports, pin_factory=factory)
    rig = Rig(panel, Calls(loop), Calls(loop), [])
    try:
        for number in held:
            pin(factory, number).drive_low()
        panel.start(loop, lambda port, pressed: rig.ptt.append((port, pressed)),
                    on_select=rig.select, on_emergency=rig.emergency)
        yield rig
    finally:
        panel.close()


# --- select --------------------------------------------------------------------------------------


async def test_select_calls_once_per_press_on_the_press_edge(factory: MockFactory) -> None:
    sel = pin(factory, A_SEL)
    async with started(factory) as rig:
        await from_thread(bounce(sel, "LHLHL"))
        assert await rig.select.next() == "a", "on the press, while the button is still down"
        await asyncio.sleep(SETTLE_S)
        await from_thread(bounce(sel, "HLHLH"))
        await asyncio.sleep(SETTLE_S)
        assert rig.select.ports == ["a"], "bounces and the release call nothing"
        await from_thread(sel.drive_low)
        assert await rig.select.next() == "a"
        await from_thread(sel.drive_high)
        await from_thread(pin(factory, B_SEL).drive_low)
        assert await rig.select.next() == "b"
        await asyncio.sleep(SETTLE_S)
        assert rig.select.ports == ["a", "a", "b"]
        assert rig.select.threads == {threading.get_ident()}, "on_select runs on the loop's thread"
        assert (rig.ptt, rig.emergency.ports) == ([], [])


async def test_select_pulse_shorter_than_debounce_is_ignored(factory: MockFactory) -> None:
    async with started(factory) as rig:
        await from_thread(bounce(pin(factory, A_SEL), "LHLH"))
        await asyncio.sleep(SETTLE_S)
        assert rig.select.ports == []


# --- emergency -----------------------------------------------------------------------------------


async def test_emergency_held_one_and_a_half_hold_times_calls_once(factory: MockFactory) -> None:
    emg = pin(factory, A_EMG)
    async with started(factory) as rig:
        t0 = now()
        await from_thread(bounce(emg, "LHLHL"))
        assert await rig.emergency.next() == "a"
        assert rig.emergency.times[0] - t0 >= (DEBOUNCE_MS + HOLD_MS) / 1000 * 0.99
        await asyncio.sleep(max(0.0, t0 + 1.5 * HOLD_S - now()))
        await from_thread(bounce(emg, "HLHLH"))
        await asyncio.sleep(SETTLE_S)
        assert rig.emergency.ports == ["a"]
        assert rig.emergency.threads == {threading.get_ident()}
        assert (rig.ptt, rig.select.ports) == ([], [])


async def test_emergency_released_early_calls_nothing(factory: MockFactory) -> None:
    emg = pin(factory, A_EMG)
    async with started(factory) as rig:
        await from_thread(emg.drive_low)
        await asyncio.sleep(2 / 3 * HOLD_S)  # 1.0 s of the default 1.5 s
        await from_thread(bounce(emg, "HLH"))
        await asyncio.sleep(HOLD_S + SETTLE_S)
        assert rig.emergency.ports == []


async def test_short_press_then_long_press_times_the_second(factory: MockFactory) -> None:
    emg = pin(factory, A_EMG)
    async with started(factory) as rig:
        await from_thread(emg.drive_low)
        await asyncio.sleep(HOLD_S / 2)
        await from_thread(emg.drive_high)
        await asyncio.sleep(1.2 * DEBOUNCE_MS / 1000)  # the release counts
        t1 = now()
        await from_thread(emg.drive_low)  # pressed again before the first press's hold ran out
        assert await rig.emergency.next() == "a"
        assert rig.emergency.times[0] - t1 >= (DEBOUNCE_MS + HOLD_MS) / 1000 * 0.99


async def test_emergency_held_on_does_not_repeat(factory: MockFactory) -> None:
    emg = pin(factory, A_EMG)
    async with started(factory) as rig:
        await from_thread(emg.drive_low)
        assert await rig.emergency.next() == "a"
        await asyncio.sleep(4 * HOLD_S)  # 5 s of the default 1.5 s, all told
        assert rig.emergency.ports == ["a"]
        await from_thread(emg.drive_high)
        await asyncio.sleep(SETTLE_S)
        assert rig.emergency.ports == ["a"]


async def test_two_long_presses_call_twice(factory: MockFactory) -> None:
    emg = pin(factory, A_EMG)
    async with started(factory) as rig:
        for _ in range(2):
            await from_thread(emg.drive_low)
            assert await rig.emergency.next() == "a"
            await from_thread(emg.drive_high)
            await asyncio.sleep(SETTLE_S)
        assert rig.emergency.ports == ["a", "a"]


async def test_emergency_glitch_while_held_keeps_the_hold(factory: MockFactory) -> None:
    emg = pin(factory, A_EMG)
    async with started(factory) as rig:
        t0 = now()
        await from_thread(emg.drive_low)
        await asyncio.sleep(HOLD_S / 2)
        await from_thread(bounce(emg, "HLHL"))  # shorter than the debounce: still held
        assert await rig.emergency.next() == "a"
        assert rig.emergency.times[0] - t0 < (DEBOUNCE_MS + HOLD_MS) / 1000 + 0.1, "not restarted"


async def test_emergency_at_the_default_hold_time(factory: MockFactory) -> None:
    settings = GpioSettings(pin_factory="mock", debounce_ms=DEBOUNCE_MS)
    assert settings.emergency_hold_ms == 1500
    emg = pin(factory, A_EMG)
    async with started(factory, settings, [PORT_A]) as rig:
        t0 = now()
        await from_thread(emg.drive_low)
        await asyncio.sleep(1.0)
        assert rig.emergency.ports == [], "1 s is not yet a long press"
        assert await rig.emergency.next() == "a"
        assert rig.emergency.times[0] - t0 >= (DEBOUNCE_MS + 1500) / 1000 * 0.99
        await from_thread(emg.drive_high)
        await asyncio.sleep(SETTLE_S)
        assert rig.emergency.ports == ["a"]


async def test_close_during_a_hold_calls_nothing(factory: MockFactory) -> None:
    async with started(factory) as rig:
        await from_thread(pin(factory, A_EMG).drive_low)
        await asyncio.sleep(2 * DEBOUNCE_MS / 1000)  # pressed: the hold timer runs
        rig.panel.close()
        await asyncio.sleep(HOLD_S + SETTLE_S)
        assert rig.emergency.ports == []


# --- both ----------------------------------------------------------------------------------------


async def test_buttons_held_at_start_need_a_fresh_press(factory: MockFactory) -> None:
    # A button stuck closed must not switch groups or raise an alarm at every boot.
    sel, emg = pin(factory, A_SEL), pin(factory, A_EMG)
    async with started(factory, ports=[PORT_A], held=[A_SEL, A_EMG]) as rig:
        assert sel.state is False and emg.state is False
        await asyncio.sleep(HOLD_S + SETTLE_S)
        assert (rig.select.ports, rig.emergency.ports) == ([], [])
        await from_thread(bounce(sel, "HLHL"))  # not a release: shorter than the debounce
        await asyncio.sleep(SETTLE_S)
        assert rig.select.ports == []
        for p in (sel, emg):
            await from_thread(p.drive_high)
        await asyncio.sleep(SETTLE_S)
        for p in (sel, emg):
            await from_thread(p.drive_low)
        assert await rig.select.next() == "a"
        assert await rig.emergency.next() == "a"


async def test_buttons_without_a_callback_are_not_watched(factory: MockFactory) -> None:
    panel = Panel(SETTINGS, [PORT_A], pin_factory=factory)
    ptt: list[tuple[str, bool]] = []
    try:
        panel.start(asyncio.get_running_loop(), lambda port, pressed: ptt.append((port, pressed)))
        for p in (pin(factory, A_SEL), pin(factory, A_EMG)):
            await from_thread(p.drive_low)
        await asyncio.sleep(HOLD_S + SETTLE_S)
        await from_thread(pin(factory, A_PTT).drive_low)
        await asyncio.sleep(SETTLE_S)
        assert ptt == [("a", True)]
    finally:
        panel.close()


def test_close_releases_the_select_and_emergency_pins(factory: MockFactory) -> None:
    panel = Panel(SETTINGS, [PORT_A, PORT_B], pin_factory=factory)
    for number in (A_SEL, A_EMG, B_SEL, B_EMG):
        with pytest.raises(GPIOPinInUse):
            gpiozero.DigitalInputDevice(number, pin_factory=factory)
    panel.close()
    for number in (A_SEL, A_EMG, B_SEL, B_EMG):
        gpiozero.DigitalInputDevice(number, pin_factory=factory).close()
    Panel(SETTINGS, [PORT_A, PORT_B], pin_factory=factory).close()


@pytest.mark.parametrize(("key", "number"), [("select_pin", A_SEL), ("emergency_pin", A_EMG)])
def test_claim_failure_names_the_key(factory: MockFactory, key: str, number: int) -> None:
    holder = gpiozero.DigitalInputDevice(number, pin_factory=factory)
    with pytest.raises(GpioError) as info:
        Panel(SETTINGS, [PORT_A], pin_factory=factory)
    err = info.value
    assert (err.key, err.pin) == (f"ports.a.{key}", number)
    assert f"ports.a.{key} = {number}" in str(err)
    assert isinstance(err.__cause__, GPIOPinInUse)
    holder.close()
    # The pins claimed before the failing one were given back.
    Panel(SETTINGS, [PORT_A], pin_factory=factory).close()
