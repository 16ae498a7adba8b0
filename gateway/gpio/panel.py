"""The box's front panel: buttons in, TX/RX/power LEDs out, over gpiozero.

Each port may have three buttons: push-to-talk (``ptt_pin``: pressed and released), group select
(``select_pin``: each press asks for the next talk group) and emergency (``emergency_pin``: a long
press of ``gpio.emergency_hold_ms`` asks for an emergency call, or to cancel one; a short press
does nothing, so a knock raises no alarm). The panel reports; the App decides what a call means.

The hardware seam is gpiozero's pin factory, a constructor argument: ``None`` lets gpiozero pick
the native backend (lgpio on a Pi), and :func:`make_pin_factory` turns ``gpio.pin_factory = "mock"``
into gpiozero's own ``MockFactory``, whose pins tests drive with ``drive_low`` / ``drive_high``.

gpiozero reports button edges from its own thread. :meth:`Panel._from_gpio_thread` is the one place
they cross into the asyncio loop (``call_soon_threadsafe``); from there on everything runs on the
loop: each edge is fed to a pure :class:`~gateway.gpio.debounce.Debouncer` (one per button) stamped
with ``loop.time()``, and a loop timer asks it again when the pending level is due. The emergency
hold is a second loop timer, started by the debounced press and cancelled by the debounced release.

gpiozero's own ``bounce_time`` stays off (``None``): its meaning depends on the backend (RPi.GPIO
ignores edges for a while after one, pigpio applies a glitch filter:
https://github.com/gpiozero/gpiozero/issues/828), with it set, presses without releases have been
seen (https://github.com/gpiozero/gpiozero/issues/550), and MockFactory ignores it (``MockPin``'s
``_set_bounce`` is a stub), so tests could not reach it. One debouncer of ours runs everywhere.

A button is a gpiozero ``DigitalInputDevice(pull_up=True)`` (wired to ground), not a ``Button``:
``Button`` adds a hold thread that we don't use (the long press is timed on the loop, where the
debounced level is) and that makes ``close()`` wait 0.1 s per button, or up to ``hold_time`` (1 s)
while the button is held (``HoldThread.held`` in
https://github.com/gpiozero/gpiozero/blob/master/gpiozero/mixins.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gpiozero
from gpiozero.exc import BadPinFactory, GPIOZeroError
from gpiozero.pins.mock import MockFactory

from gateway.config import GpioSettings, PortSettings
from gateway.errors import GatewayError
from gateway.gpio.debounce import Change, Debouncer

#: Half-period of the power LED's blink while the broker link is down: slow enough to read as
#: "alive, not linked" rather than as an error flash.
LINK_BLINK_S = 1.0


class GpioError(GatewayError, RuntimeError):
    """A configured pin could not be claimed; ``key`` is the config key that names ``pin``."""

    def __init__(self, key: str, pin: int, message: str) -> None:
        self.key = key
        self.pin = pin
        self.message = message
        super().__init__(f"{key} = {pin}: cannot claim GPIO{pin}: {message}")


def make_pin_factory(name: str) -> gpiozero.Factory | None:
    """The pin factory for ``gpio.pin_factory``: ``mock`` -> MockFactory, ``native`` -> gpiozero's default."""
    if name == "mock":
        return MockFactory()
    if name == "native":
        return None
    raise ValueError(f"gpio.pin_factory must be 'native' or 'mock', got {name!r}")


#: The buttons a port may have, by role; each role's pin is the ``ports.NAME.<role>_pin`` key.
PTT, SELECT, EMERGENCY = "ptt", "select", "emergency"

PortCallback = Callable[[str], None]
"""Called on the loop with the port's name."""


@dataclass
class _Port:
    """One port's LEDs."""

    name: str
    tx_led: Any = None
    rx_led: Any = None


@dataclass
class _Button:
    """One button of a port, with its debounce state and the loop timers that serve it."""

    port: str
    role: str
    """:data:`PTT`, :data:`SELECT` or :data:`EMERGENCY`."""
    device: Any
    debouncer: Debouncer | None = None
    """Set by :meth:`Panel.start` while someone listens to this button; None otherwise."""
    timer: asyncio.TimerHandle | None = None
    """Asks the debouncer again when its pending level is due."""
    hold_timer: asyncio.TimerHandle | None = None
    """Emergency button: fires when the debounced press has lasted ``emergency_hold_ms``."""


class Panel:
    """Buttons and LEDs of one box; button events arrive debounced, on the loop."""

    def __init__(
        self,
        settings: GpioSettings,
        ports: Sequence[PortSettings],
        pin_factory: gpiozero.Factory | None = None,
        *,
        link_blink_s: float = LINK_BLINK_S,
    ) -> None:
        self._settings = settings
        self._factory = pin_factory
        self._link_blink_s = link_blink_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_ptt: Callable[[str, bool], None] | None = None
        self._on_select: PortCallback | None = None
        self._on_emergency: PortCallback | None = None
        self._linked: bool | None = None
        self._closed = False
        self._ports: dict[str, _Port] = {}
        self._buttons: list[_Button] = []
        # Each device is registered for closing as soon as it is claimed, so a pin that can't be
        # claimed half-way releases the ones before it (the bleak AsyncExitStack habit).
        with contextlib.ExitStack() as stack:
            self._power_led = self._claim(stack, gpiozero.LED, settings.power_led_pin,
                                          "gpio.power_led_pin")
            for p in ports:
                key = f"ports.{p.name}"
                for role, number in ((PTT, p.ptt_pin), (SELECT, p.select_pin),
                                     (EMERGENCY, p.emergency_pin)):
                    device = self._claim(stack, gpiozero.DigitalInputDevice, number,
                                         f"{key}.{role}_pin", pull_up=True, bounce_time=None)
                    if device is not None:
                        self._buttons.append(_Button(p.name, role, device))
                self._ports[p.name] = _Port(
                    name=p.name,
                    tx_led=self._claim(stack, gpiozero.LED, p.tx_led_pin, f"{key}.tx_led_pin"),
                    rx_led=self._claim(stack, gpiozero.LED, p.rx_led_pin, f"{key}.rx_led_pin"),
                )
            self._devices = stack.pop_all()

    def _claim(
        self, stack: contextlib.ExitStack, make: Any, pin: int | None, key: str, **kwargs: Any
    ) -> Any:
        if pin is None:
            return None
        try:
            device = make(pin, pin_factory=self._factory, **kwargs)
        except Exception as exc:
            if not _is_claim_error(exc):
                raise
            message = str(exc) or type(exc).__name__
            if isinstance(exc, BadPinFactory):
                message += ' (no GPIO on this machine? gpio.pin_factory = "mock" runs without it)'
            raise GpioError(key, pin, message) from exc
        stack.callback(device.close)
        return device

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_ptt: Callable[[str, bool], None],
        on_select: PortCallback | None = None,
        on_emergency: PortCallback | None = None,
    ) -> None:
        """Call on the loop: deliver debounced button events there from now on.

        ``on_ptt(port, pressed)`` on every change of a PTT button; ``on_select(port)`` on every
        press of a group button; ``on_emergency(port)`` once per press of an emergency button that
        has lasted ``gpio.emergency_hold_ms`` (however much longer it is held). A button whose
        callback is None is not watched.
        """
        if self._closed:
            raise RuntimeError("panel is closed")
        if self._loop is not None:
            raise RuntimeError("panel already started")
        self._loop = loop
        self._on_ptt = on_ptt
        self._on_select = on_select
        self._on_emergency = on_emergency
        listening = {PTT: True, SELECT: on_select is not None, EMERGENCY: on_emergency is not None}
        for button in self._buttons:
            if not listening[button.role]:
                continue
            # gpiozero unwraps partials to check the callback takes no argument (mixins.event).
            button.device.when_activated = functools.partial(self._from_gpio_thread, button, True)
            button.device.when_deactivated = functools.partial(
                self._from_gpio_thread, button, False)
            held = bool(button.device.is_active)
            # A PTT button already held at start counts like a fresh press (after debounce): the
            # reported state always matches the button. A select or emergency button must be
            # pressed after start: a button stuck closed must not switch groups or raise an
            # alarm at every boot.
            button.debouncer = Debouncer(self._settings.debounce_ms,
                                         initial=held and button.role != PTT)
            if held and button.role == PTT:
                self._on_level(button, True)
        if self._linked is None:
            self.set_link(False)

    def set_tx(self, port: str, on: bool) -> None:
        """Light ``port``'s TX LED while it transmits (no-op without the LED or after close)."""
        self._set_led(self._ports[port].tx_led, on)

    def set_rx(self, port: str, on: bool) -> None:
        """Light ``port``'s RX LED while it hears someone (no-op without the LED or after close)."""
        self._set_led(self._ports[port].rx_led, on)

    def set_link(self, connected: bool) -> None:
        """Power LED: solid while the broker link is up, a slow blink while it is down."""
        if self._closed or self._linked is connected:
            return  # restarting the blink on every call would keep it lit
        self._linked = connected
        if self._power_led is None:
            return
        if connected:
            self._power_led.on()  # also stops gpiozero's blink thread
        else:
            self._power_led.blink(on_time=self._link_blink_s, off_time=self._link_blink_s)

    def close(self) -> None:
        """Stop delivering events and release every pin (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for button in self._buttons:
            for handle in (button.timer, button.hold_timer):
                if handle is not None:
                    handle.cancel()
            button.timer = button.hold_timer = None
        self._devices.close()

    def _set_led(self, led: Any, on: bool) -> None:
        if led is None or self._closed:
            return
        led.value = on

    def _from_gpio_thread(self, button: _Button, level: bool) -> None:
        """gpiozero's thread -> the loop: the only crossing."""
        loop = self._loop
        if loop is None:
            return
        # A loop closed during shutdown raises RuntimeError: there is nobody left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_level, button, level)

    def _on_level(self, button: _Button, level: bool) -> None:
        if self._closed or button.debouncer is None:
            return
        change = button.debouncer.feed(level, self._now_ms())
        self._reschedule(button)
        if change is not None:
            self._deliver(button, change)

    def _on_due(self, button: _Button, due_ms: float) -> None:
        button.timer = None
        if self._closed or button.debouncer is None:
            return
        # asyncio runs a timer up to one clock resolution before its time (BaseEventLoop._run_once:
        # https://github.com/python/cpython/blob/3.11/Lib/asyncio/base_events.py#L1884), and the
        # ms <-> s round trip can lose an ulp: the timer's own due time is the truth.
        change = button.debouncer.poll(max(self._now_ms(), due_ms))
        self._reschedule(button)
        if change is not None:
            self._deliver(button, change)

    def _reschedule(self, button: _Button) -> None:
        assert self._loop is not None and button.debouncer is not None
        if button.timer is not None:
            button.timer.cancel()
            button.timer = None
        due = button.debouncer.due_ms
        if due is not None:
            button.timer = self._loop.call_at(due / 1000.0, self._on_due, button, due)

    def _deliver(self, button: _Button, change: Change) -> None:
        if button.role == PTT:
            assert self._on_ptt is not None
            self._on_ptt(button.port, change.level)
        elif button.role == SELECT:
            if change.level and self._on_select is not None:
                self._on_select(button.port)
        else:
            self._start_hold(button, change)

    def _start_hold(self, button: _Button, change: Change) -> None:
        """Emergency button: time the press from when it counted; a release cancels it."""
        assert self._loop is not None
        if button.hold_timer is not None:
            button.hold_timer.cancel()
            button.hold_timer = None
        if change.level:
            due = change.at_ms + self._settings.emergency_hold_ms
            button.hold_timer = self._loop.call_at(due / 1000.0, self._on_held, button, due)

    def _on_held(self, button: _Button, due_ms: float) -> None:
        button.hold_timer = None
        if self._closed or button.debouncer is None or self._on_emergency is None:
            return
        # A release that counts by due_ms but whose debounce timer hasn't run yet (same due time,
        # or the loop was late) ended the press in time: no call.
        if button.debouncer.state_at(due_ms):
            self._on_emergency(button.port)

    def _now_ms(self) -> float:
        assert self._loop is not None
        return self._loop.time() * 1000.0


def _is_claim_error(exc: Exception) -> bool:
    """Errors that mean "this pin can't be had here", as opposed to bugs."""
    if isinstance(exc, (GPIOZeroError, OSError)):
        return True
    # lgpio, the Pi's default backend, raises its own ``lgpio.error`` (not a GPIOZeroError) for a
    # line another process holds: https://github.com/gpiozero/gpiozero/issues/1057 ('GPIO busy').
    lgpio = sys.modules.get("lgpio")
    error = getattr(lgpio, "error", None)
    return isinstance(error, type) and isinstance(exc, error)
