"""The site broker's mosquitto configuration: listeners, logins, access rules and bridges, as text.

Everything here renders text from frozen settings (pure, so tests read it back), plus two file helpers,
:func:`write_text_atomic` and :func:`set_passwords`. Every directive in a rendered file comes under a
comment saying why, for the technician who opens it on a box. Option reference:
https://mosquitto.org/man/mosquitto-conf-5.html

Passwords are hashed here, in mosquitto 2's own ``$7$`` format (PBKDF2-SHA512), rather than by running
``mosquitto_passwd -b``: that tool takes the password on its command line, where any local user can
read it in ``/proc/PID/cmdline``, and it may be missing where the files are built (an image build
host). The tests check the format against ``mosquitto_passwd`` and a real broker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import shutil
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import NAME_RE
from gateway.errors import ConfigError

DEFAULT_TOPIC_ROOT = "gateway/v1"
DEFAULT_PASSWORD_FILE = "/etc/mosquitto/gateway.passwd"
DEFAULT_ACL_FILE = "/etc/mosquitto/gateway.acl"

PBKDF2_ITERATIONS = 101
"""mosquitto_passwd's own default. mosquitto checks passwords on its one thread, so a costly hash
stalls every client (WAN voice included) while a site's boxes reconnect at once; gateway passwords
are random 192-bit secrets (:func:`new_password`), so more rounds would add nothing."""
_SALT_BYTES = 12
"""What mosquitto_passwd 2.0 writes."""

IMPORTS = ("groups/+/voice/+", "alerts/+", "gateways/+/presence", "gateways/+/announce/+")
"""What a site takes in from every site, relative to ``{topic_root}/{site}``: WAN voice, alerts,
presence, and voice announcements (receivers accept SRTP only from senders they saw announced)."""
COMMANDS = ("groups/+/cmd/#", "gateways/+/cmd/#")
"""Command topics relative to ``{topic_root}/{site}``: consoles write them."""

_ROOT_RE = re.compile(r"^[^/+#\s\x00]+(/[^/+#\s\x00]+)*$")


@dataclass(frozen=True)
class Listener:
    """One socket the broker listens on; TLS when ``certfile`` and ``keyfile`` are set.

    ``cafile`` is the CA that signs client certificates (needed to require them), ``certfile`` and
    ``keyfile`` the broker's own certificate and key, all PEM.
    """

    address: str = "127.0.0.1"
    """Address to bind: 127.0.0.1 for a single box, the box's LAN address for a site broker."""
    port: int = 1883
    """TCP port (1883 plain MQTT, 8883 MQTT over TLS by convention)."""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    require_certificate: bool = False
    """Refuse TLS clients without a certificate signed by ``cafile``."""
    use_identity_as_username: bool = False
    """Log the client in as its certificate's CN, the gateway id (no password asked)."""

    @property
    def tls(self) -> bool:
        """True when this listener speaks TLS."""
        return bool(self.certfile or self.keyfile)


@dataclass(frozen=True)
class BrokerConf:
    """The broker itself: where it listens, where its logins and rules are, what it keeps."""

    listeners: tuple[Listener, ...] = (Listener(),)
    password_file: str = DEFAULT_PASSWORD_FILE
    acl_file: str = DEFAULT_ACL_FILE
    persistence_dir: str = ""
    """Empty keeps nothing on disk (the default); else a writable directory for ``mosquitto.db``."""
    max_packet_bytes: int = 65536
    """Largest MQTT packet accepted; control payloads are <= 4 KiB and voice packets far smaller."""
    title: str = ""
    """What this broker is, for the header comment (e.g. ``site plant``)."""


@dataclass(frozen=True)
class GatewayAccess:
    """One gateway of the site (user name = gateway id) and the talk groups it may command."""

    gateway_id: str
    command_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class SiteAccess:
    """Who may do what on one site's broker."""

    site: str
    topic_root: str = DEFAULT_TOPIC_ROOT
    gateways: tuple[GatewayAccess, ...] = ()
    """Gateways with extra rights; every logged-in user already gets the gateway patterns."""
    consoles: tuple[str, ...] = ()
    """User names of consoles: they read everything and write commands."""
    imports: tuple[str, ...] = IMPORTS


@dataclass(frozen=True)
class Bridge:
    """A link from a site broker to a central broker or a cluster of them."""

    site: str
    addresses: tuple[tuple[str, int], ...]
    """Central broker nodes as (host, port); several for a cluster."""
    name: str = "central"
    topic_root: str = DEFAULT_TOPIC_ROOT
    username: str = ""
    """Remote user name; empty = the site name (what :func:`render_central_acl` expects)."""
    password: str = field(default="", repr=False)
    """Written in clear into the bridge file: keep that file 0640 root:mosquitto."""
    tls: bool = False
    """Use TLS; without ``cafile`` the system CAs (/etc/ssl/certs) check the remote."""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    round_robin: bool = True
    """True: cluster nodes are equals, stay on whichever answers. False: the first is the main one."""
    clean_session: bool = True
    keepalive_s: int = 30
    restart_min_s: int = 2
    restart_max_s: int = 30
    commands_in: bool = True
    """Take this site's command topics in from consoles at the centre."""
    imports: tuple[str, ...] = IMPORTS


class _Doc:
    """Lines of a mosquitto file where every directive sits under the comment that explains it."""

    def __init__(self, *header: str) -> None:
        self.lines = [f"# {h}" for h in header] + [""]

    def add(self, why: str, *directives: str) -> None:
        for d in directives:
            if any(c in d for c in "\r\n\x00"):  # never let a value start a directive of its own
                raise ValueError(f"line break or NUL in a mosquitto directive: {d!r}")
        self.lines += [f"# {line}" for line in textwrap.wrap(why, 98)] + list(directives)

    def section(self, title: str) -> None:
        self.lines += ["", f"# --- {title} ---"]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_broker_conf(conf: BrokerConf) -> str:
    """The broker's mosquitto.conf (a whole file, or a drop-in for Debian's /etc/mosquitto/conf.d)."""
    if not conf.listeners:
        raise ValueError("a broker needs at least one listener")
    doc = _Doc(f"mosquitto configuration for the voice gateway{': ' + conf.title if conf.title else ''}.",
               "Generated by `gateway broker-config`: regenerate rather than edit.",
               "Every option: https://mosquitto.org/man/mosquitto-conf-5.html")
    doc.add("One set of logins and rules for every listener below.", "per_listener_settings false")
    doc.add("Nobody connects without logging in (password, or client certificate where required).",
            "allow_anonymous false")
    doc.add("User names and PBKDF2-SHA512 password hashes, one 'user:$7$...' line each.",
            f"password_file {_word(conf.password_file, 'password_file')}")
    doc.add("Who may publish and subscribe where; anything not allowed there is refused.",
            f"acl_file {_word(conf.acl_file, 'acl_file')}")
    if conf.persistence_dir:
        doc.add("Keep retained messages and sessions across restarts, in this directory.", "persistence true",
                f"persistence_location {_word(conf.persistence_dir, 'persistence_dir').rstrip('/')}/")
    else:
        doc.add("Keep nothing on disk: no SD card wear, no half-written database after a power cut; "
                "gateways re-announce their retained state at every reconnect.", "persistence false")
    doc.add("Refuse oversized packets (control payloads are at most 4 KiB), so a flood stays cheap.",
            f"max_packet_size {_positive(conf.max_packet_bytes, 'max_packet_bytes')}")
    # mosquitto 2.0.11 sets TCP_NODELAY on accepted sockets only, not on its bridges' own (strace).
    doc.add("Send small packets at once (no Nagle delay) to clients: WAN voice is one message per 20 ms.",
            "set_tcp_nodelay true")
    for lst in conf.listeners:
        doc.section(f"{'MQTT over TLS' if lst.tls else 'Plain MQTT'} on {lst.address}:{lst.port}")
        _listener(doc, lst)
    return doc.text()


def _listener(doc: _Doc, lst: Listener) -> None:
    local = lst.address in ("127.0.0.1", "::1", "localhost")
    doc.add(f"Listen on {'this box only' if local else 'the network'}.",
            f"listener {_port(lst.port)} {_word(lst.address, 'address')}")
    doc.add("MQTT over TCP only (no websockets).", "protocol mqtt")
    if (lst.tls and not (lst.certfile and lst.keyfile)) or (
            lst.require_certificate and not (lst.tls and lst.cafile)) or (
            lst.use_identity_as_username and not lst.require_certificate):
        raise ValueError(f"listener {lst.address}:{lst.port}: TLS needs certfile and keyfile, "
                         "require_certificate needs TLS and a cafile, use_identity_as_username needs both")
    if lst.tls:
        if lst.cafile:
            doc.add("CA certificate that signs client certificates.", f"cafile {_word(lst.cafile, 'cafile')}")
        doc.add("The broker's certificate and private key (PEM).",
                f"certfile {_word(lst.certfile, 'certfile')}", f"keyfile {_word(lst.keyfile, 'keyfile')}")
    if lst.require_certificate:
        doc.add("Clients must show a certificate signed by the CA above.", "require_certificate true")
    if lst.use_identity_as_username:
        doc.add("The certificate's CN is the user name (the gateway id); no password is asked.",
                "use_identity_as_username true")


_ACL_HEADER = (
    "Generated by `gateway broker-config`: regenerate rather than edit.",
    "Anything not allowed below is refused. 'pattern' lines apply to every logged-in user, with %u",
    "replaced by its user name; 'topic' lines apply to the 'user' above them. No rule comes before the",
    "first 'user' line, so anonymous clients get nothing. mosquitto warns at start about patterns",
    "without %u or %c: those are meant for everyone.",
)


def render_site_acl(access: SiteAccess) -> str:
    """The site broker's acl_file: gateways write only their own topics, consoles command."""
    root = _site_root(access.topic_root, access.site)
    consoles = [_name(c, "console") for c in access.consoles]
    # pattern rules apply to consoles too: a console named like a gateway could speak as that gateway.
    clash = sorted({_name(g.gateway_id, "gateway id") for g in access.gateways} & set(consoles))
    if clash:
        raise ValueError(f"user names used for both a gateway and a console: {', '.join(clash)}")
    doc = _Doc(f"mosquitto access rules for site {access.site!r}, topics under {root}/.", *_ACL_HEADER)
    doc.section("Every user (a gateway logs in with its gateway id)")
    doc.add("Read everything of this site.", f"pattern read {root}/#")
    for rel in access.imports:
        doc.add("Read what the bridge brings in from every site.",
                f"pattern read {_root(access.topic_root)}/+/{_filter(rel)}")
    doc.add("Write its own subtree: presence, ports, announcements, replies.",
            f"pattern write {root}/gateways/%u/#")
    doc.add("Write its own WAN voice, on any group.", f"pattern write {root}/groups/+/voice/%u")
    doc.add("Write its own alerts.", f"pattern write {root}/alerts/%u")
    for gw in access.gateways:
        if gw.command_groups:
            doc.section(f"Gateway {gw.gateway_id}")
            doc.add("The rules below are for this gateway only.", f"user {gw.gateway_id}")
            for group in gw.command_groups:
                doc.add(f"Command group {group}.", f"topic write {root}/groups/{_name(group, 'group')}/cmd/#")
    for console in consoles:
        _console(doc, console, access.topic_root, root)
    return doc.text()


def render_central_acl(topic_root: str = DEFAULT_TOPIC_ROOT, *, consoles: Iterable[str] = (),
                       imports: Iterable[str] = IMPORTS) -> str:
    """The central broker's acl_file: each site's bridge logs in with the site name as user name."""
    top = _root(topic_root)
    doc = _Doc(f"mosquitto access rules for the central broker, topics under {top}/.", *_ACL_HEADER)
    doc.section("Every user (a site's bridge, logged in with the site name)")
    doc.add("A site forwards its own tree (and its bridge state) here.", f"pattern write {top}/%u/#")
    for rel in COMMANDS:
        doc.add("A site takes in the commands consoles here send it.", f"pattern read {top}/%u/{rel}")
    for rel in imports:
        doc.add("A site takes in this from every site.", f"pattern read {top}/+/{_filter(rel)}")
    for console in consoles:
        _console(doc, _name(console, "console"), topic_root, f"{top}/+")
    return doc.text()


def _console(doc: _Doc, console: str, topic_root: str, commands_root: str) -> None:
    doc.section(f"Console {console}")
    doc.add("The rules below are for this console only: it reads everything, sends commands.",
            f"user {console}")
    doc.add("Read every topic of every site this broker holds.", f"topic read {_root(topic_root)}/#")
    doc.add("Read the broker's own statistics.", "topic read $SYS/#")
    for rel in COMMANDS:
        doc.add("Send commands.", f"topic write {commands_root}/{rel}")


def render_bridge(bridge: Bridge) -> str:
    """A mosquitto ``connection`` stanza linking the site broker to a central broker or cluster."""
    root = _site_root(bridge.topic_root, bridge.site)
    name = _name(bridge.name, "bridge name")
    if not bridge.addresses:
        raise ValueError("a bridge needs at least one address")
    doc = _Doc(f"Bridge {name!r}: links site {bridge.site!r} to the central broker(s).",
               "Generated by `gateway bridge`: regenerate rather than edit. It may hold a password:",
               "keep it readable by root and the mosquitto group only (0640).")
    doc.add("Start a bridge; the name is unique on this broker.", f"connection {bridge.site}-{name}")
    doc.add("Central broker node(s).",
            "address " + " ".join(f"{_word(h, 'address')}:{_port(p)}" for h, p in bridge.addresses))
    doc.add("true: nodes are equals, stay on whichever answers; false: go back to the first when it can."
            if bridge.round_robin else "false: the first address is the main node, the rest fallbacks.",
            f"round_robin {'true' if bridge.round_robin else 'false'}")
    doc.add("MQTT 5: No Local keeps our messages from coming back, Retain As Published keeps retained "
            "flags.", "bridge_protocol_version mqttv50")
    doc.add("No mosquitto-only bridge flag: MQTT 5 covers it, and other engines may refuse it.",
            "try_private false")
    doc.add("Clean session: nothing piles up at the centre while the link is down (late voice is useless; "
            "retained state comes again on reconnect)." if bridge.clean_session else
            "Persistent session: the centre queues QoS 1 messages for us while the link is down.",
            f"cleansession {'true' if bridge.clean_session else 'false'}")
    client_id = f"bridge-{bridge.site}-{name}"
    doc.add("Client ids, unique per site so two sites never take each other's session.",
            f"remote_clientid {client_id}", f"local_clientid {client_id}-local")
    doc.add("Ping the centre this often (seconds); a dead link is noticed after about 1.5 times this.",
            f"keepalive_interval {_positive(bridge.keepalive_s, 'keepalive_s')}")
    doc.add("Reconnect after a jittered backoff between these many seconds.",
            f"restart_timeout {_positive(bridge.restart_min_s, 'restart_min_s')} "
            f"{max(bridge.restart_max_s, bridge.restart_min_s)}")
    doc.add("Connect at start and again after every failure.", "start_type automatic")
    doc.add("Publish the link's state (1 up, 0 down; retained) here and at the centre.",
            "notifications true", f"notification_topic {root}/bridges/{name}/state")
    doc.add("Log in at the centre as the site (its ACL uses %u).",
            f"remote_username {_word(bridge.username or bridge.site, 'username')}")
    if bridge.password:
        doc.add("Password for that user.", f"remote_password {_word(bridge.password, 'password')}")
    if bridge.tls or bridge.cafile:
        if bridge.cafile:
            doc.add("CA that signs the centre's certificate.", f"bridge_cafile {_word(bridge.cafile, 'ca')}")
        else:
            doc.add("The system's CAs check the centre's certificate.", "bridge_capath /etc/ssl/certs")
        doc.add("The certificate must match the address (never turn this off).", "bridge_insecure false")
    if bridge.certfile or bridge.keyfile:
        doc.add("Our client certificate and key for the centre.",
                f"bridge_certfile {_word(bridge.certfile, 'certfile')}",
                f"bridge_keyfile {_word(bridge.keyfile, 'keyfile')}")
    doc.add("Everything of this site goes out (QoS kept, up to 1).", f"topic {root}/# out 1")
    if bridge.commands_in:
        for rel in COMMANDS:
            doc.add("Commands for this site come in from consoles at the centre.", f"topic {root}/{rel} in 1")
    for rel in bridge.imports:
        realtime = any(level in ("voice", "announce") for level in rel.split("/"))
        doc.add("From every site, this comes in at QoS 0 (real time: nothing late is worth resending)."
                if realtime else "From every site, this comes in.",
                f"topic {_root(bridge.topic_root)}/+/{_filter(rel)} in {0 if realtime else 1}")
    return doc.text()


def new_password() -> str:
    """A random password for a gateway or a bridge (192 bits, URL-safe, no spaces)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``password`` in mosquitto 2's ``$7$`` format: PBKDF2-SHA512, base64 salt and hash."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _positive(iterations, "iterations"))
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash, as mosquitto would decide."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[:2] != ["", "7"] or not parts[2].isdigit() or int(parts[2]) <= 0:
        return False
    try:
        salt, want = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2])), want)


def read_password_file(path: str | Path) -> dict[str, str]:
    """User name -> hash from a mosquitto password file; empty if there is no file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            user, sep, encoded = line.partition(":")
            if not (sep and user and encoded):
                raise ConfigError(str(path), f"line {number}", "expected 'user:hash'")
            entries[user] = encoded
    return entries


def set_passwords(path: str | Path, passwords: Mapping[str, str], *, remove: Iterable[str] = (),
                  mode: int = 0o640, group: str | None = None) -> None:
    """Add or replace users' passwords (hashing them) and drop ``remove``, in one atomic write."""
    entries = read_password_file(path)
    for user in remove:
        entries.pop(user, None)
    for user, password in passwords.items():
        entries[_name(user, "user name")] = hash_password(password)
    text = "".join(f"{user}:{_word(h, 'hash')}\n" for user, h in sorted(entries.items()))
    write_text_atomic(path, text, mode=mode, group=group)


def write_text_atomic(path: str | Path, text: str, *, mode: int = 0o640, group: str | None = None) -> None:
    """Write ``text`` so a power cut leaves the old file or the new one; ``group`` e.g. ``mosquitto``."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits off
        if group is not None:
            shutil.chown(tmp, group=group)  # mosquitto reads its files as its own user
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # and the rename itself reaches the disk
    finally:
        os.close(dir_fd)


# Checks: whatever lands in a mosquitto file is one word, so no value can smuggle in a directive.


def _site_root(topic_root: str, site: str) -> str:
    return f"{_root(topic_root)}/{_name(site, 'site')}"


def _root(topic_root: str) -> str:
    if not _ROOT_RE.match(topic_root):
        raise ValueError(f"topic root {topic_root!r}: levels must be non-empty, without spaces, '+' or '#'")
    return topic_root


def _filter(value: str) -> str:
    levels = value.split("/")
    if (any(c.isspace() or c == "\x00" for c in value) or "" in levels or "#" in levels[:-1]
            or any(len(lv) > 1 and ("+" in lv or "#" in lv) for lv in levels)):
        raise ValueError(f"{value!r} is not a topic filter (empty level, spaces, misplaced '+' or '#')")
    return value


def _name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{what} {value!r}: use 1-32 letters, digits, '-' or '_' (first a letter or digit)")
    return value


def _word(value: str, what: str) -> str:
    if not value or any(c.isspace() or c == "\x00" for c in value):
        raise ValueError(f"{what} must be one word (no spaces or line breaks)")
    return value


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is not 1-65535")
    return value


def _positive(value: int, what: str) -> int:
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {value}")
    return value
