"""The DSP's inner loops, compiled with numba ahead of first use, cached where the process may write.

numba keeps the machine code of a ``cache=True`` function beside its module (``__pycache__``) or,
when that is read-only, under ``$NUMBA_CACHE_DIR`` or the user's cache directory. Where none is
writable (the systemd unit's ``ProtectSystem=strict`` and ``ProtectHome=yes`` without
``NUMBA_CACHE_DIR``) numba refuses to create the function at all ("no locator available"), which
would stop the daemon at import: :func:`compiled` then compiles without a cache, costing a few
seconds at every start instead (and says so once per function).
https://github.com/numba/numba/blob/main/numba/core/caching.py (``_CacheImpl.__init__``)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("gateway.dsp")


def compiled(signature: str) -> Callable[[F], F]:
    """``numba.njit(signature, cache=True)``, or without the cache where nothing is writable."""

    def wrap(fn: F) -> F:
        try:
            out = cast(F, njit(signature, cache=True)(fn))
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
            _log.warning("compiling %s at every start: %s (set NUMBA_CACHE_DIR to a writable "
                         "directory)", fn.__qualname__, exc)
            out = cast(F, njit(signature)(fn))
        return out

    return wrap
