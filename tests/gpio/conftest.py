"""Fixtures for the panel tests: a fresh gpiozero MockFactory per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """gpiozero's own stand-in pins, reset (every pin released and forgotten) after the test."""
    f = MockFactory()
    yield f
    f.reset()
