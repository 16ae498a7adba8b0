"""Shared fixtures: asyncio test support."""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import Callable
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C must reach the processes the tests start: a suite launched in the background by a
    non-interactive shell (``cmd &``) inherits SIGINT ignored (POSIX), and so would every child,
    so the tests of what Ctrl-C does would see nothing happen."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests on a fresh event loop (no plugin needed for this)."""
    func: Callable[..., Any] = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(func(**kwargs))
    return True


from tests.rigs.alsa import alsa_rig  # noqa: E402, F401  (session fixture: ALSA file PCMs)
from tests.rigs.mqtt import mosquitto  # noqa: E402, F401  (a private broker per test)
