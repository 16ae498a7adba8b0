"""The gateway's error tree.

Errors from libraries are translated at the boundary into these, raised ``from`` the original,
with structured fields so callers (and logs) can act on them without parsing messages. Each also
inherits the matching builtin, so generic handlers still work (the gpiozero habit).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError, ValueError):
    """A configuration file is missing, unreadable or holds a bad value.

    ``path`` is the file and ``key`` the dotted key (empty when the whole file is at fault).
    """

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path = path
        self.key = key
        self.message = message
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {message}")


class DeviceError(GatewayError, OSError):
    """An audio device could not be opened, read or written."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        self.message = message
        super().__init__(f"audio device {device!r}: {message}")


class CodecError(GatewayError, RuntimeError):
    """libopus refused a frame or a setting."""


class TransportError(GatewayError, OSError):
    """A voice socket could not be set up."""

    def __init__(self, group: str, address: str, message: str) -> None:
        self.group = group
        self.address = address
        self.message = message
        super().__init__(f"talk group {group!r} at {address}: {message}")


class BrokerError(GatewayError, OSError):
    """The embedded broker (mosquitto) could not be started."""


class ControlSocketError(GatewayError, OSError):
    """The local control socket could not be set up (another daemon is serving it)."""
