"""The box's front panel: push-to-talk buttons in, TX/RX/power LEDs out, over gpiozero.

The hardware seam is gpiozero's pin factory, a constructor argument: ``None`` lets gpiozero pick
the native backend (lgpio on a Pi), and :func:`make_pin_factory` turns ``gpio.pin_factory = "mock"``
into gpiozero's own ``MockFactory``, whose pins tests drive with ``drive_low`` / ``drive_high``.

gpiozero reports button edges from its own thread. :meth:`Panel._from_gpio_thread` is the one place
they cross into the asyncio loop (``call_soon_threadsafe``); from there on everything runs on the
loop: each edge is fed to a pure :class:`~gateway.gpio.debounce.Debouncer` stamped with
``loop.time()``, and a loop timer asks it again when the pending level is due.

gpiozero's own ``bounce_time`` stays off (``None``): its meaning depends on the backend (RPi.GPIO
ignores edges for a while after one, pigpio applies a glitch filter:
https://github.com/gpiozero/gpiozero/issues/828), with it set, presses without releases have been
seen (https://github.com/gpiozero/gpiozero/issues/550), and MockFactory ignores it (``MockPin``'s
``_set_bounce`` is a stub), so tests could not reach it. One debouncer of ours runs everywhere.

A button is a gpiozero ``Button(pull_up=True)``. Its hold thread makes ``close()`` take 0.1 s per
button, or up to ``hold_time`` (1 s) while the button is held (``HoldThread.held`` in
https://github.com/gpiozero/gpiozero/blob/master/gpiozero/mixins.py): a cost paid only at shutdown,
and the hold machinery is what a long-press (emergency call) will use.
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


@dataclass
class _Port:
    """One port's devices and its button's debounce state."""

    name: str
    button: Any = None
    tx_led: Any = None
    rx_led: Any = None
    debouncer: Debouncer | None = None
    timer: asyncio.TimerHandle | None = None


class Panel:
    """Buttons and LEDs of one box; push-to-talk edges arrive debounced, on the loop."""

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
        self._linked: bool | None = None
        self._closed = False
        self._ports: dict[str, _Port] = {}
        # Each device is registered for closing as soon as it is claimed, so a pin that can't be
        # claimed half-way releases the ones before it (the bleak AsyncExitStack habit).
        with contextlib.ExitStack() as stack:
            self._power_led = self._claim(stack, gpiozero.LED, settings.power_led_pin,
                                          "gpio.power_led_pin")
            for p in ports:
                key = f"ports.{p.name}"
                self._ports[p.name] = _Port(
                    name=p.name,
                    button=self._claim(stack, gpiozero.Button, p.ptt_pin,
                                       f"{key}.ptt_pin", pull_up=True, bounce_time=None),
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

    def start(self, loop: asyncio.AbstractEventLoop, on_ptt: Callable[[str, bool], None]) -> None:
        """Call on the loop: deliver debounced ``on_ptt(port, pressed)`` there from now on."""
        if self._closed:
            raise RuntimeError("panel is closed")
        if self._loop is not None:
            raise RuntimeError("panel already started")
        self._loop = loop
        self._on_ptt = on_ptt
        for port in self._ports.values():
            if port.button is None:
                continue
            port.debouncer = Debouncer(self._settings.debounce_ms, initial=False)
            # gpiozero unwraps partials to check the callback takes no argument (mixins.event).
            port.button.when_activated = functools.partial(self._from_gpio_thread, port.name, True)
            port.button.when_deactivated = functools.partial(
                self._from_gpio_thread, port.name, False)
            # A button already held at start counts like a fresh press (after debounce): the
            # reported state always matches the button.
            if port.button.is_active:
                self._on_level(port.name, True)
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
        """Stop delivering edges and release every pin (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for port in self._ports.values():
            if port.timer is not None:
                port.timer.cancel()
                port.timer = None
        self._devices.close()

    def _set_led(self, led: Any, on: bool) -> None:
        if led is None or self._closed:
            return
        led.value = on

    def _from_gpio_thread(self, port: str, level: bool) -> None:
        """gpiozero's thread -> the loop: the only crossing."""
        loop = self._loop
        if loop is None:
            return
        # A loop closed during shutdown raises RuntimeError: there is nobody left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_level, port, level)

    def _on_level(self, name: str, level: bool) -> None:
        port = self._ports[name]
        if self._closed or port.debouncer is None:
            return
        change = port.debouncer.feed(level, self._now_ms())
        self._reschedule(port)
        if change is not None:
            self._deliver(port, change)

    def _on_due(self, name: str, due_ms: float) -> None:
        port = self._ports[name]
        port.timer = None
        if self._closed or port.debouncer is None:
            return
        # asyncio runs a timer up to one clock resolution before its time (BaseEventLoop._run_once:
        # https://github.com/python/cpython/blob/3.11/Lib/asyncio/base_events.py#L1884), and the
        # ms <-> s round trip can lose an ulp: the timer's own due time is the truth.
        change = port.debouncer.poll(max(self._now_ms(), due_ms))
        self._reschedule(port)
        if change is not None:
            self._deliver(port, change)

    def _reschedule(self, port: _Port) -> None:
        assert self._loop is not None and port.debouncer is not None
        if port.timer is not None:
            port.timer.cancel()
            port.timer = None
        due = port.debouncer.due_ms
        if due is not None:
            port.timer = self._loop.call_at(due / 1000.0, self._on_due, port.name, due)

    def _deliver(self, port: _Port, change: Change) -> None:
        assert self._on_ptt is not None
        self._on_ptt(port.name, change.level)

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
