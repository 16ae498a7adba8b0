"""The panel on gpiozero's MockFactory: buttons are driven like a bouncing contact, LEDs read back.

Contacts bounce as :mod:`tests.gpio.contacts` plays them: several ``drive_low`` / ``drive_high``
toggles inside the debounce time, from a foreign thread as gpiozero's own would be. The debounce is
long compared with the patterns (milliseconds against DEBOUNCE_MS) so a busy machine can't turn a
bounce into a press.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import gpiozero
import pytest
from gpiozero.exc import BadPinFactory, GPIOPinInUse, PinInvalidPin
from gpiozero.pins.mock import MockFactory, MockPin

from gateway.config import GpioSettings, PortSettings
from gateway.errors import GatewayError
from gateway.gpio.panel import GpioError, Panel, make_pin_factory
from tests.gpio.contacts import bounce, from_thread, pin

DEBOUNCE_MS = 50
SETTLE_S = 3 * DEBOUNCE_MS / 1000  # long enough for any stray event to have shown up
POWER, A_PTT, A_TX, A_RX, B_PTT, B_TX, B_RX = 5, 17, 22, 23, 27, 24, 25

SETTINGS = GpioSettings(pin_factory="mock", power_led_pin=POWER, debounce_ms=DEBOUNCE_MS)
PORT_A = PortSettings(name="a", ptt_pin=A_PTT, tx_led_pin=A_TX, rx_led_pin=A_RX)
PORT_B = PortSettings(name="b", ptt_pin=B_PTT, tx_led_pin=B_TX, rx_led_pin=B_RX)


@dataclass
class Recorder:
    """Collects on_ptt calls with the thread they arrived on and the loop time."""

    loop: asyncio.AbstractEventLoop
    events: list[tuple[str, bool]] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    times: list[float] = field(default_factory=list)
    queue: asyncio.Queue[tuple[str, bool]] = field(default_factory=asyncio.Queue)

    def __call__(self, port: str, pressed: bool) -> None:
        self.events.append((port, pressed))
        self.threads.add(threading.get_ident())
        self.times.append(self.loop.time())
        self.queue.put_nowait((port, pressed))

    async def next(self) -> tuple[str, bool]:
        return await asyncio.wait_for(self.queue.get(), 2.0)


async def started(
    factory: MockFactory, ports: Sequence[PortSettings] = (PORT_A, PORT_B), **kwargs: float
) -> tuple[Panel, Recorder]:
    panel = Panel(SETTINGS, ports, pin_factory=factory, **kwargs)
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    panel.start(loop, rec)
    return panel, rec


# ------------------------------------------------------------------------------------------------


async def test_press_and_release_arrive_debounced_on_the_loop(factory: MockFactory) -> None:
    panel, rec = await started(factory)
    try:
        t0 = asyncio.get_running_loop().time()
        await from_thread(pin(factory, A_PTT).drive_low)
        assert await rec.next() == ("a", True)
        assert rec.times[0] - t0 >= DEBOUNCE_MS / 1000 * 0.99
        await from_thread(pin(factory, A_PTT).drive_high)
        assert await rec.next() == ("a", False)
        await asyncio.sleep(SETTLE_S)
        assert rec.events == [("a", True), ("a", False)]
        assert rec.threads == {threading.get_ident()}, "on_ptt runs on the loop's thread"
    finally:
        panel.close()


async def test_bouncing_contact_gives_one_event_each_way(factory: MockFactory) -> None:
    panel, rec = await started(factory)
    ptt = pin(factory, A_PTT)
    try:
        await from_thread(bounce(ptt, "LHLHLHL"))
        assert await rec.next() == ("a", True)
        await asyncio.sleep(SETTLE_S)
        assert rec.events == [("a", True)]
        await from_thread(bounce(ptt, "HLHLH"))
        assert await rec.next() == ("a", False)
        await asyncio.sleep(SETTLE_S)
        assert rec.events == [("a", True), ("a", False)]
    finally:
        panel.close()


async def test_pulse_shorter_than_debounce_is_ignored(factory: MockFactory) -> None:
    panel, rec = await started(factory)
    try:
        await from_thread(bounce(pin(factory, A_PTT), "LHLH"))
        await asyncio.sleep(SETTLE_S)
        assert rec.events == []
    finally:
        panel.close()


async def test_glitch_while_held_does_not_release(factory: MockFactory) -> None:
    panel, rec = await started(factory)
    ptt = pin(factory, A_PTT)
    try:
        await from_thread(ptt.drive_low)
        assert await rec.next() == ("a", True)
        await from_thread(bounce(ptt, "HLHL"))
        await asyncio.sleep(SETTLE_S)
        assert rec.events == [("a", True)]
    finally:
        panel.close()


async def test_two_ports_are_independent(factory: MockFactory) -> None:
    panel, rec = await started(factory)
    a, b = pin(factory, A_PTT), pin(factory, B_PTT)
    try:
        await from_thread(a.drive_low)
        assert await rec.next() == ("a", True)
        # b bounces and settles pressed while a is released: neither disturbs the other.
        await from_thread(bounce(b, "LHLHL"))
        await from_thread(a.drive_high)
        assert sorted([await rec.next(), await rec.next()]) == [("a", False), ("b", True)]
        await asyncio.sleep(SETTLE_S)
        assert len(rec.events) == 3
        panel.set_tx("a", True)
        panel.set_rx("b", True)
        assert (pin(factory, A_TX).state, pin(factory, A_RX).state) == (True, False)
        assert (pin(factory, B_TX).state, pin(factory, B_RX).state) == (False, True)
    finally:
        panel.close()


async def test_button_held_at_start_counts_after_debounce(factory: MockFactory) -> None:
    panel = Panel(SETTINGS, [PORT_A], pin_factory=factory)
    pin(factory, A_PTT).drive_low()
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    try:
        panel.start(loop, rec)
        assert rec.events == []
        assert await rec.next() == ("a", True)
    finally:
        panel.close()


async def test_close_before_debounce_delivers_nothing(factory: MockFactory) -> None:
    panel, rec = await started(factory)
    await from_thread(pin(factory, A_PTT).drive_low)
    await asyncio.sleep(0)  # let the crossing land, so a timer is pending
    panel.close()
    await asyncio.sleep(SETTLE_S)
    assert rec.events == []


def test_leds_follow_set_tx_and_set_rx(factory: MockFactory) -> None:
    panel = Panel(SETTINGS, [PORT_A, PORT_B], pin_factory=factory)
    try:
        leds = [pin(factory, n) for n in (A_TX, A_RX, B_TX, B_RX)]
        assert [p.state for p in leds] == [False] * 4
        panel.set_tx("a", True)
        panel.set_rx("a", True)
        assert [p.state for p in leds] == [True, True, False, False]
        panel.set_tx("a", False)
        assert [p.state for p in leds] == [False, True, False, False]
        assert [s.state for s in pin(factory, A_TX).states] == [False, True, False]
        with pytest.raises(KeyError):
            panel.set_tx("nope", True)
    finally:
        panel.close()


def test_port_without_pins_is_a_no_op(factory: MockFactory) -> None:
    bare = PortSettings(name="bare")
    panel = Panel(GpioSettings(), [bare], pin_factory=factory)
    panel.set_tx("bare", True)
    panel.set_rx("bare", True)
    panel.set_link(True)
    panel.close()


def wait_for_toggles(p: MockPin, count: int, timeout_s: float = 2.0) -> list[bool]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [s.state for s in p.states]
        if len(states) > count:
            return states
        time.sleep(0.005)
    raise AssertionError(f"pin changed only {len(p.states) - 1} times, expected {count}")


async def test_power_led_blinks_unlinked_and_is_solid_linked(factory: MockFactory) -> None:
    panel, _ = await started(factory, link_blink_s=0.01)
    power = pin(factory, POWER)
    try:
        states = await asyncio.to_thread(wait_for_toggles, power, 4)
        assert states[:5] == [False, True, False, True, False], "start() blinks: not linked yet"
        panel.set_link(True)
        assert power.state is True
        power.clear_states()
        await asyncio.sleep(0.1)
        assert [s.state for s in power.states] == [True], "solid while linked"
        panel.set_link(True)
        assert [s.state for s in power.states] == [True]
        panel.set_link(False)
        states = await asyncio.to_thread(wait_for_toggles, power, 3)
        assert False in states[1:]
    finally:
        panel.close()
    power.clear_states()
    await asyncio.sleep(0.05)
    assert len(power.states) == 1, "close() stops the blink thread"


def test_close_releases_pins_for_a_second_panel(factory: MockFactory) -> None:
    first = Panel(SETTINGS, [PORT_A, PORT_B], pin_factory=factory)
    with pytest.raises(GpioError) as info:
        Panel(SETTINGS, [PORT_A, PORT_B], pin_factory=factory)
    assert info.value.key == "gpio.power_led_pin"
    assert isinstance(info.value.__cause__, GPIOPinInUse)
    first.close()
    first.close()  # idempotent
    first.set_tx("a", True)  # after close: ignored, not an error
    first.set_link(False)
    second = Panel(SETTINGS, [PORT_A, PORT_B], pin_factory=factory)
    second.close()


def test_failed_claim_releases_the_pins_claimed_before_it(factory: MockFactory) -> None:
    holder = Panel(GpioSettings(), [PORT_B], pin_factory=factory)
    with pytest.raises(GpioError) as info:
        Panel(SETTINGS, [PORT_A, PORT_B], pin_factory=factory)
    err = info.value
    assert (err.key, err.pin) == ("ports.b.ptt_pin", B_PTT)
    assert "ports.b.ptt_pin = 27" in str(err)
    holder.close()
    # Power and port a were claimed before b failed; they must have been given back.
    Panel(SETTINGS, [PORT_A, PORT_B], pin_factory=factory).close()


def test_invalid_pin_is_a_gpio_error(factory: MockFactory) -> None:
    port = PortSettings(name="x", tx_led_pin=99)
    with pytest.raises(GpioError) as info:
        Panel(GpioSettings(), [port], pin_factory=factory)
    err = info.value
    assert isinstance(err, GatewayError)
    assert isinstance(err, RuntimeError)
    assert (err.key, err.pin) == ("ports.x.tx_led_pin", 99)
    assert isinstance(err.__cause__, PinInvalidPin)


def test_native_factory_without_gpio_is_a_clear_error() -> None:
    if gpiozero.Device.pin_factory is not None:
        pytest.skip("a default pin factory is already set in this process")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gpiozero warns once per backend it falls back from
        try:
            panel = Panel(SETTINGS, [PORT_A], pin_factory=make_pin_factory("native"))
        except GpioError as err:
            assert err.key == "gpio.power_led_pin"
            assert isinstance(err.__cause__, BadPinFactory)
            assert 'gpio.pin_factory = "mock"' in str(err)
            return
    panel.close()
    pytest.skip("this machine has GPIO")


def test_make_pin_factory() -> None:
    assert isinstance(make_pin_factory("mock"), MockFactory)
    assert make_pin_factory("native") is None
    with pytest.raises(ValueError, match="pin_factory"):
        make_pin_factory("lgpio")


async def test_start_twice_is_refused(factory: MockFactory) -> None:
    panel, rec = await started(factory)
    try:
        with pytest.raises(RuntimeError, match="already started"):
            panel.start(asyncio.get_running_loop(), rec)
    finally:
        panel.close()

