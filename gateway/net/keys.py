"""Talk-group secrets and the keys derived from them (HKDF-SHA256, RFC 5869).

Each talk group has one shared secret, provisioned in the config (``groups.NAME.secret``) or in a
file in the state directory (``<state_dir>/keys/<group>.key``, written by ``gateway keygen``). It
never leaves the box and is never logged; everything on the wire uses keys derived from it:

- an SRTP master key and salt per sending port and process start: HKDF over the secret with the
  group's name, the port's SSRC and a fresh random 64-bit *epoch* drawn when the sender starts. So a
  restart (a power cut) never reuses a key with the same SRTP index, and no two senders share a key;
- an announcement key per group: authenticates the in-band and MQTT announcements that tell
  receivers which (SSRC, epoch) pairs to accept (:mod:`gateway.net.announce`).

A receiver derives a sender's key only from an announcement it authenticated, so knowing the
secret is what makes a box a member of the group.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import ConfigError

#: AES_CM_128_HMAC_SHA1_80 (RFC 3711): 128-bit master key plus 112-bit master salt.
SRTP_KEY_BYTES = 16
SRTP_SALT_BYTES = 14
ANNOUNCE_KEY_BYTES = 32
#: A secret shorter than this (in characters) is refused: it is the whole of the group's security.
MIN_SECRET_CHARS = 32
EPOCH_BYTES = 8

_SALT = b"voice-gateway/v1"


def generate_secret() -> str:
    """A new random group secret: 32 random bytes as URL-safe base64 (43 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def new_epoch() -> int:
    """A fresh random 64-bit epoch for a sender starting now."""
    return secrets.randbits(8 * EPOCH_BYTES)


def check_secret(secret: str) -> str | None:
    """Why ``secret`` can't be a group secret, or None when it can."""
    if len(secret) < MIN_SECRET_CHARS:
        return f"must be at least {MIN_SECRET_CHARS} characters (gateway keygen prints one)"
    if secret != secret.strip() or any(c.isspace() for c in secret):
        return "must not contain whitespace"
    return None


def secret_path(state_dir: str, group: str) -> Path:
    """Where a group's secret lives when the config doesn't carry it."""
    return Path(state_dir) / "keys" / f"{group}.key"


def load_secret(group: str, inline: str, state_dir: str) -> bytes:
    """The group's secret: ``inline`` from the config, else the file in the state directory.

    Raises ConfigError naming both places when neither has a valid secret (never the secret).
    """
    key = f"groups.{group}.secret"
    if inline:
        problem = check_secret(inline)
        if problem:
            raise ConfigError("<config>", key, problem)
        return inline.encode()
    path = secret_path(state_dir, group) if state_dir else None
    if path is None:
        raise ConfigError("<config>", key, "is not set and there is no state_dir to read it from")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            str(path), key,
            f"is not set and {path} can't be read ({exc.strerror}); create it with "
            f"'gateway keygen --group {group}' and copy it to every box of the group",
        ) from exc
    problem = check_secret(text)
    if problem:
        raise ConfigError(str(path), key, problem)
    return text.encode()


def write_secret(state_dir: str, group: str, secret: str) -> Path:
    """Store a group secret in the state directory, readable by its owner only."""
    path = secret_path(state_dir, group)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
    return path


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(secret)


def srtp_key(secret: bytes, group: str, ssrc: int, epoch: int) -> bytes:
    """The SRTP master key + salt (30 bytes, libsrtp's order) of one sender in one epoch."""
    info = (
        b"srtp\x00" + group.encode() + b"\x00"
        + (ssrc & 0xFFFFFFFF).to_bytes(4, "big") + (epoch & (2**64 - 1)).to_bytes(8, "big")
    )
    return _hkdf(secret, info, SRTP_KEY_BYTES + SRTP_SALT_BYTES)


def announce_key(secret: bytes, group: str) -> bytes:
    """The HMAC key that authenticates a group's announcements."""
    return _hkdf(secret, b"announce\x00" + group.encode(), ANNOUNCE_KEY_BYTES)
