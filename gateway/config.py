"""Configuration: one TOML file plus ``conf.d/*.toml`` merged in name order, as frozen dataclasses.

Every field has its unit in its name and a docstring-style comment. Loading is strict: unknown keys,
wrong types and out-of-range values are :class:`~gateway.errors.ConfigError` naming the file that
set the key and the dotted key itself. ``etc/gateway.toml`` is the commented example.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.net.keys import check_secret

DEFAULT_PATH = Path("/etc/gateway/gateway.toml")

#: Processing rate inside the box: every port is resampled to this, Opus runs at it.
PROCESSING_RATE_HZ = 16000

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
NAME_RE = _NAME_RE
"""Names of the gateway, site, groups and ports (they are parts of MQTT topics and file names)."""


@dataclass(frozen=True)
class GatewaySettings:
    """Who this box is."""

    id: str = "gateway"
    """Unique name of this box within its site; used in MQTT topics and to derive SSRCs."""
    site: str = "site"
    """Site name: one MQTT topic root per site."""
    state_dir: str = "/var/lib/gateway"
    """Where the box keeps state that must survive a restart."""


@dataclass(frozen=True)
class CodecSettings:
    """Opus encoder settings, shared by every port of the box."""

    frame_ms: int = 20
    """Opus frame length: 20 (default) or 10 (lower delay, more packets)."""
    bitrate_bps: int = 32000
    """Target bitrate per talking port, 6000-128000."""
    complexity: int = 5
    """Encoder complexity 0-10; 5 leaves CPU for other ports on a Pi."""
    adaptive_fec: bool = True
    """Turn FEC on and set the loss hint from what listeners report (``fec`` and
    ``expected_loss_pct`` are then only the starting point); false = use them as set."""
    fec: bool = False
    """Opus in-band forward error correction."""
    expected_loss_pct: int = 0
    """Packet-loss hint given to the encoder (0-100); FEC only spends bits when this is > 0."""
    dtx: bool = False
    """Discontinuous transmission: send almost nothing during silence within a talk spurt."""
    payload_type: int = 111
    """RTP dynamic payload type for Opus (96-127); every box of a site must agree."""


@dataclass(frozen=True)
class NetworkSettings:
    """Voice transport (RTP over UDP)."""

    bind_address: str = "0.0.0.0"
    """Local address for unicast voice sockets."""
    multicast_interface: str = ""
    """Address of the interface multicast is sent and joined on; empty = the kernel's choice."""
    multicast_ttl: int = 1
    """IP TTL of multicast voice (1 = this subnet only)."""
    jitter_min_ms: int = 0
    """Floor of each talker's adaptive jitter-buffer delay (the buffer follows measured jitter)."""
    jitter_max_ms: int = 200
    """Ceiling of that delay: later packets are concealed rather than waited for."""
    max_datagram_bytes: int = 1500
    """Datagrams larger than this are dropped as oversized."""
    advertise: bool = True
    """Announce this box on its LAN by DNS-SD (mDNS ``_gateway._udp``), so consoles and other
    boxes can list it; on ``bind_address``'s interface, or on every interface when that is
    0.0.0.0."""


@dataclass(frozen=True)
class GroupSettings:
    """One talk group: a set of ports across boxes that hear each other."""

    name: str
    """The group's name (the key of its table)."""
    port: int = 5004
    """UDP port of this group's RTP session."""
    multicast: str = ""
    """IPv4 multicast address of the group on the LAN; empty = unicast to ``peers`` only."""
    peers: tuple[str, ...] = ()
    """Unicast peers, ``host`` or ``host:port`` (default port = ``port``)."""
    secret: str = field(default="", repr=False)
    """The group's shared secret (>= 32 characters, ``gateway keygen``); every voice key of the
    group derives from it. Empty = read ``<state_dir>/keys/<name>.key``. Never printed or logged."""
    wan: bool = False
    """Also carry this group's voice to other sites: the same SRTP packets travel as MQTT messages
    through the site broker and its bridge (the LAN keeps using multicast/peers)."""
    mode: str = "half-duplex"
    """``half-duplex`` (one talker at a time, decided alike on every box: emergency, then priority,
    then who pressed first) or ``conference`` (up to ``max_talkers`` at once, mixed)."""
    max_talkers: int = 3
    """``conference`` groups: how many may talk at once (1-16)."""
    tot_s: int = 60
    """Transmit time-out: a transmission is cut after this long, with a warning tone
    ``tot_warning_s`` before; 0 = no limit."""
    tot_warning_s: int = 5
    """How long before the time-out the warning tone sounds; 0 = no warning."""
    emergency_tot_s: int = 300
    """Time-out of an emergency call (longer, but not unlimited: a stuck button must not hold the
    group forever); 0 = no limit."""


@dataclass(frozen=True)
class MqttSettings:
    """Control plane: MQTT 5 broker connection."""

    enabled: bool = True
    """False runs the box in LAN-only mode (voice needs no broker)."""
    host: str = "localhost"
    """Broker host name or address."""
    port: int = 1883
    """Broker TCP port."""
    username: str = ""
    """User name; empty = anonymous."""
    password: str = field(default="", repr=False)
    """Password (never logged)."""
    keepalive_s: int = 30
    """MQTT keepalive; the broker declares the box offline after about 1.5 times this."""
    tls: bool = False
    """Connect over TLS (port 8883 usually); the broker's certificate is verified."""
    cafile: str = ""
    """CA certificate that signs the broker's (empty: the system's CAs)."""
    certfile: str = ""
    """This box's client certificate, when the broker logs boxes in by certificate."""
    keyfile: str = field(default="", repr=False)
    """The client certificate's private key (keep it 0600)."""
    topic_root: str = "gateway/v1"
    """Versioned root; topics are ``{topic_root}/{site}/...``."""
    reconnect_min_s: float = 1.0
    """First retry delay after the broker is lost."""
    reconnect_max_s: float = 30.0
    """Longest retry delay (backoff doubles up to this)."""
    advertise_broker: bool = False
    """This box runs the site broker (mosquitto on ``port``, reachable at
    ``network.bind_address``): announce it by DNS-SD as ``_mqtt._tcp`` for boxes configured with
    ``host = "auto"``."""
    will_delay_s: int = 10
    """The broker publishes the box's "offline (lost)" presence only this long after the link
    drops, so a quick reconnect (a Wi-Fi blip, a restart) doesn't flap; 0 = at once."""
    telemetry_period_s: float = 10.0
    """How often the box publishes its telemetry (load, temperature, xruns, loss and jitter per
    sender) while linked."""


@dataclass(frozen=True)
class GpioSettings:
    """Buttons and LEDs on the box."""

    pin_factory: str = "native"
    """``native`` lets gpiozero pick (lgpio on a Pi); ``mock`` uses gpiozero's MockFactory."""
    power_led_pin: int | None = None
    """BCM pin of the power/link LED: blinks while the broker is unreachable, solid when linked."""
    debounce_ms: int = 30
    """A button level must hold this long before it counts (bounce filter)."""
    emergency_hold_ms: int = 1500
    """An emergency button starts (or, held again, cancels) an emergency call when held this long;
    a short press does nothing, so a knock doesn't raise an alarm."""


@dataclass(frozen=True)
class DspSettings:
    """A port's uplink processing chain (``[ports.NAME.dsp]``), at 16 kHz in this order."""

    highpass_hz: float = 100.0
    """High-pass cutoff (removes DC, rumble and mains hum); 0 turns the filter off."""
    noise_suppression: bool = True
    """Suppress steady and slowly changing background noise (fans, engines, generators)."""
    ns_max_attenuation_db: float = 30.0
    """Strength: the most noise-only sound is turned down, 0-40 dB (0 = analyse only). In steady
    white noise the suppressor settles near 22 dB at 30; lower values make it gentler."""
    agc: bool = True
    """Bring speech to ``agc_target_dbfs``, with the gain frozen while nobody speaks."""
    agc_target_dbfs: float = -20.0
    """Active speech level the AGC aims for (RMS, full-scale sine = 0 dBFS)."""
    agc_max_gain_db: float = 24.0
    """Most the AGC will amplify a quiet talker, 0-40 dB."""
    agc_attack_ms: float = 500.0
    """How fast the gain comes down when speech gets louder (time constant)."""
    agc_release_ms: float = 2000.0
    """How fast the gain goes up when speech gets quieter (time constant)."""
    vad_threshold: float = 1.0
    """Voice detector: smoothed log likelihood ratio above which a hop is speech (higher = stricter)."""
    vad_release: float = 0.5
    """Voice detector: speech lasts until the ratio falls below this (hysteresis, <= threshold)."""
    vad_hangover_ms: int = 20
    """Voice detector: speech is held this long after the ratio falls below ``vad_release``."""
    vad_range_db: float = 33.0
    """Voice detector: sound further than this below the talker's recent peak is not speech (a
    word's decay, the room's echo); raise it for a talker far from a shared microphone."""
    vad_min_snr_db: float = -5.0
    """Voice detector: a hop must stand at least this far out of the noise (200 Hz-4 kHz) to count
    as speech; lower it to catch weak speech in loud noise, at the price of more false starts."""
    vad_hold_ms: int = 600
    """``talk_mode = "vad"``: the talk gate stays open this long after the last speech (pauses)."""
    vad_preroll_ms: int = 200
    """``talk_mode = "vad"``: audio from before the detection sent at the start of a transmission."""
    limiter: bool = True
    """Soft limiter at the end of the chain: peaks never clip."""
    limiter_threshold_dbfs: float = -1.0
    """Level above which the limiter turns peaks down."""


@dataclass(frozen=True)
class PortSettings:
    """One local audio endpoint: a headset, a speaker/mic, a radio line."""

    name: str
    """The port's name (the key of its table)."""
    backend: str = "alsa"
    """``alsa`` (a sound card or bluez-alsa headset) or ``wav`` (files; simulator and tests)."""
    capture_device: str = "default"
    """ALSA PCM to capture from (``alsa`` backend)."""
    playback_device: str = "default"
    """ALSA PCM to play to (``alsa`` backend)."""
    device_rate_hz: int = 48000
    """Sample rate the device is opened at; resampled to 16 kHz inside."""
    pace_realtime: bool = False
    """Pace device I/O with the gateway's clock: for ALSA file/null PCMs that don't pace themselves."""
    wav_input: str = ""
    """``wav`` backend: mono 16-bit WAV played as the microphone (silence after its end)."""
    wav_output: str = ""
    """``wav`` backend: WAV file that records what the port plays."""
    talk_mode: str = "ptt"
    """``ptt`` (transmit while the button is held), ``vad`` (hands-free: transmit while the voice
    detector hears speech, starting with ``dsp.vad_preroll_ms`` of audio from before it) or ``open``
    (always transmitting)."""
    groups: tuple[str, ...] = ()
    """Talk groups this port listens to, most important first: while a group earlier in the list
    is heard, the later ones are held silent (a scan list)."""
    talk_group: str = ""
    """Group this port talks on; default = the first of ``groups``."""
    priority: int = 0
    """Floor priority 0-7 of this port's transmissions: a higher one breaks in on a lower one in
    the group (a supervisor's headset, a dispatcher's desk)."""
    ptt_latching: bool = False
    """``ptt`` talk mode: one press starts talking and the next one stops (for a speaker/mic on a
    desk, or gloved hands), instead of talking while the button is held."""
    ptt_pin: int | None = None
    """BCM pin of the push-to-talk button (to ground, internal pull-up)."""
    select_pin: int | None = None
    """BCM pin of the group button: each press selects the next of ``groups`` to talk on."""
    emergency_pin: int | None = None
    """BCM pin of the emergency button: a long press (``gpio.emergency_hold_ms``) starts an
    emergency call, another long press cancels it."""
    tx_led_pin: int | None = None
    """BCM pin of the LED lit while this port transmits."""
    rx_led_pin: int | None = None
    """BCM pin of the LED lit while this port hears someone."""
    playback_buffer_ms: int = 80
    """Most audio queued for the device; older audio is dropped (and counted) past this."""
    dsp: DspSettings = field(default_factory=DspSettings)
    """The uplink processing chain (``[ports.NAME.dsp]``)."""


@dataclass(frozen=True)
class Config:
    """The whole effective configuration of one box."""

    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    codec: CodecSettings = field(default_factory=CodecSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    gpio: GpioSettings = field(default_factory=GpioSettings)
    groups: tuple[GroupSettings, ...] = ()
    ports: tuple[PortSettings, ...] = ()
    sources: tuple[str, ...] = ()
    """Files the configuration was read from, in merge order (not a TOML key)."""

    def group(self, name: str) -> GroupSettings:
        """The group called ``name``."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# Loading


def load(path: str | Path | None = None) -> Config:
    """Read ``path`` (default ``/etc/gateway/gateway.toml``) and its ``conf.d/`` into a Config."""
    main = Path(path) if path is not None else DEFAULT_PATH
    files = [main]
    conf_d = main.parent / "conf.d"
    if conf_d.is_dir():
        files += sorted(conf_d.glob("*.toml"))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for f in files:
        _merge(merged, _read_toml(f), origin, str(f), "")
    cfg = from_dict(merged, origin, default_file=str(main))
    return dataclasses.replace(cfg, sources=tuple(str(f) for f in files))


def from_dict(
    data: Mapping[str, Any],
    origin: Mapping[str, str] | None = None,
    default_file: str = "<config>",
) -> Config:
    """Build and validate a Config from parsed TOML (``origin`` maps dotted keys to files)."""
    where = _Where(origin or {}, default_file)
    known = {"gateway", "codec", "network", "mqtt", "gpio", "groups", "ports"}
    for key in data:
        if key not in known:
            raise where.error(key, f"unknown section (expected one of {', '.join(sorted(known))})")
    groups = tuple(
        _build(GroupSettings, body, f"groups.{name}", where, name=name)
        for name, body in _table(data, "groups", where).items()
    )
    ports = tuple(
        _build(PortSettings, body, f"ports.{name}", where, name=name)
        for name, body in _table(data, "ports", where).items()
    )
    cfg = Config(
        gateway=_build(GatewaySettings, data.get("gateway", {}), "gateway", where),
        codec=_build(CodecSettings, data.get("codec", {}), "codec", where),
        network=_build(NetworkSettings, data.get("network", {}), "network", where),
        mqtt=_build(MqttSettings, data.get("mqtt", {}), "mqtt", where),
        gpio=_build(GpioSettings, data.get("gpio", {}), "gpio", where),
        groups=groups,
        ports=tuple(
            p if p.talk_group or not p.groups else dataclasses.replace(p, talk_group=p.groups[0])
            for p in ports
        ),
    )
    _validate(cfg, where)
    return cfg


def load_dsp(path: str | Path, port: str | None = None) -> DspSettings:
    """DSP settings from a file: a gateway config (``port``'s, default the first port's), a file
    with a ``[dsp]`` table, or a file holding just the keys of one."""
    path = Path(path)
    data = _read_toml(path)
    where = _Where({}, str(path))
    if "ports" in data or "gateway" in data:
        cfg = from_dict(data, default_file=str(path))
        chosen = [p for p in cfg.ports if port is None or p.name == port]
        if not chosen:
            raise where.error(f"ports.{port}" if port else "ports", "no such port in this file")
        return chosen[0].dsp
    body, section = (data["dsp"], "dsp") if set(data) == {"dsp"} else (data, "dsp")
    dsp = _build(DspSettings, body, section, where)
    _validate_dsp(dsp, section, where)
    return dsp


def to_dict(cfg: Config) -> dict[str, Any]:
    """The effective configuration as TOML-shaped data (password masked), for ``config check``."""
    out: dict[str, Any] = {}
    for section in ("gateway", "codec", "network", "mqtt", "gpio"):
        out[section] = {
            k: v for k, v in dataclasses.asdict(getattr(cfg, section)).items() if v is not None
        }
    if out["mqtt"].get("password"):
        out["mqtt"]["password"] = "********"
    out["groups"] = {g.name: _entry(g) for g in cfg.groups}
    for g in out["groups"].values():
        if g["secret"]:
            g["secret"] = "********"
        else:
            del g["secret"]  # read from the state directory at start
    out["ports"] = {p.name: _entry(p) for p in cfg.ports}
    return out


def _entry(obj: Any) -> dict[str, Any]:
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in dataclasses.asdict(obj).items()
        if k != "name" and v is not None
    }


class _Where:
    """Finds the file that set a dotted key, for error messages."""

    def __init__(self, origin: Mapping[str, str], default_file: str) -> None:
        self.origin = origin
        self.default_file = default_file

    def error(self, key: str, message: str) -> ConfigError:
        probe = key
        while probe:
            if probe in self.origin:
                return ConfigError(self.origin[probe], key, message)
            # "ports.x.groups[1]" was set with its array "ports.x.groups", not with "ports.x".
            probe = probe.rpartition("[")[0] if probe.endswith("]") else probe.rpartition(".")[0]
        return ConfigError(self.default_file, key, message)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "", "file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc


def _merge(
    into: dict[str, Any], new: Mapping[str, Any], origin: dict[str, str], src: str, prefix: str
) -> None:
    """Deep-merge tables; a later file's scalar or array replaces the earlier one."""
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, src, dotted + ".")
        else:
            into[key] = value
            origin[dotted] = src
            if isinstance(value, dict):
                _mark(value, origin, src, dotted + ".")


def _mark(table: Mapping[str, Any], origin: dict[str, str], src: str, prefix: str) -> None:
    for key, value in table.items():
        origin[f"{prefix}{key}"] = src
        if isinstance(value, dict):
            _mark(value, origin, src, f"{prefix}{key}.")


def _table(data: Mapping[str, Any], key: str, where: _Where) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise where.error(key, f"must be a table of named {key} ([{key}.NAME])")
    for name, body in value.items():
        if not _NAME_RE.match(name):
            raise where.error(
                f"{key}.{name}", "name must be 1-32 letters, digits, '-' or '_'"
            )
        if not isinstance(body, dict):
            raise where.error(f"{key}.{name}", "must be a table")
    return value


_T = typing.TypeVar("_T")


def _build(cls: type[_T], body: Any, section: str, where: _Where, **fixed: Any) -> _T:
    """Construct dataclass ``cls`` from a TOML table, checking every key and type."""
    if not isinstance(body, dict):
        raise where.error(section, "must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - set(fixed)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = dict(fixed)
    for key, value in body.items():
        dotted = f"{section}.{key}"
        if key not in names:
            raise where.error(dotted, f"unknown key (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(value, hints[key], dotted, where)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str, where: _Where) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):  # "int | None": None means "absent" in TOML
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, inner, key, where)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise where.error(key, f"must be an array of strings, got {_tname(value)}")
        return tuple(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, key, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise where.error(key, f"must be true or false, got {_tname(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise where.error(key, f"must be an integer, got {_tname(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(key, f"must be a number, got {_tname(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise where.error(key, f"must be a string, got {_tname(value)}")
        return value
    raise where.error(key, f"unsupported type {hint!r}")  # pragma: no cover - schema bug


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _check(cond: bool, where: _Where, key: str, message: str) -> None:
    if not cond:
        raise where.error(key, message)


def _validate(cfg: Config, where: _Where) -> None:
    """Ranges and cross-references that types alone can't express."""
    gw, c, n, m, g = cfg.gateway, cfg.codec, cfg.network, cfg.mqtt, cfg.gpio
    _check(bool(_NAME_RE.match(gw.id)), where, "gateway.id",
           "must be 1-32 letters, digits, '-' or '_' (it is part of MQTT topics)")
    _check(bool(_NAME_RE.match(gw.site)), where, "gateway.site",
           "must be 1-32 letters, digits, '-' or '_' (it is part of MQTT topics)")
    _check(c.frame_ms in (10, 20), where, "codec.frame_ms", f"must be 10 or 20, got {c.frame_ms}")
    _check(6000 <= c.bitrate_bps <= 128000, where, "codec.bitrate_bps",
           f"must be 6000-128000, got {c.bitrate_bps}")
    _check(0 <= c.complexity <= 10, where, "codec.complexity",
           f"must be 0-10, got {c.complexity}")
    _check(0 <= c.expected_loss_pct <= 100, where, "codec.expected_loss_pct",
           f"must be 0-100, got {c.expected_loss_pct}")
    _check(96 <= c.payload_type <= 127, where, "codec.payload_type",
           f"must be a dynamic payload type 96-127, got {c.payload_type}")
    _check(_is_ipv4(n.bind_address), where, "network.bind_address",
           f"must be an IPv4 address, got {n.bind_address!r}")
    _check(n.multicast_interface == "" or _is_ipv4(n.multicast_interface), where,
           "network.multicast_interface",
           f"must be empty or an IPv4 address, got {n.multicast_interface!r}")
    _check(1 <= n.multicast_ttl <= 255, where, "network.multicast_ttl",
           f"must be 1-255, got {n.multicast_ttl}")
    _check(0 <= n.jitter_min_ms <= 1000, where, "network.jitter_min_ms",
           f"must be 0-1000, got {n.jitter_min_ms}")
    _check(n.jitter_min_ms <= n.jitter_max_ms <= 2000, where, "network.jitter_max_ms",
           f"must be jitter_min_ms ({n.jitter_min_ms})-2000, got {n.jitter_max_ms}")
    _check(64 <= n.max_datagram_bytes <= 65507, where, "network.max_datagram_bytes",
           f"must be 64-65507, got {n.max_datagram_bytes}")
    _check(bool(m.host), where, "mqtt.host", "must not be empty")
    _check(not (m.certfile or m.keyfile or m.cafile) or m.tls, where, "mqtt.tls",
           "must be true when cafile, certfile or keyfile is set")
    _check(bool(m.certfile) == bool(m.keyfile), where, "mqtt.certfile",
           "certfile and keyfile go together")
    _check(m.username in ("", gw.id), where, "mqtt.username",
           f"must be this gateway's id {gw.id!r} (or empty): the site broker's access rules give "
           "each gateway the topics of the user name it logs in with")
    _check(1 <= m.port <= 65535, where, "mqtt.port", f"must be 1-65535, got {m.port}")
    _check(5 <= m.keepalive_s <= 3600, where, "mqtt.keepalive_s",
           f"must be 5-3600, got {m.keepalive_s}")
    _check(bool(re.fullmatch(r"[A-Za-z0-9_/-]+", m.topic_root)) and not m.topic_root.endswith("/"),
           where, "mqtt.topic_root", "must be letters, digits, '_', '-' and '/', no trailing '/'")
    _check(0 <= m.will_delay_s <= 3600, where, "mqtt.will_delay_s",
           f"must be 0-3600, got {m.will_delay_s}")
    _check(1 <= m.telemetry_period_s <= 3600, where, "mqtt.telemetry_period_s",
           f"must be 1-3600, got {m.telemetry_period_s}")
    _check(0.1 <= m.reconnect_min_s <= m.reconnect_max_s <= 3600, where, "mqtt.reconnect_min_s",
           "must satisfy 0.1 <= reconnect_min_s <= reconnect_max_s <= 3600")
    _check(g.pin_factory in ("native", "mock"), where, "gpio.pin_factory",
           f"must be 'native' or 'mock', got {g.pin_factory!r}")
    _check(200 <= g.emergency_hold_ms <= 10000, where, "gpio.emergency_hold_ms",
           f"must be 200-10000, got {g.emergency_hold_ms}")
    _check(0 <= g.debounce_ms <= 1000, where, "gpio.debounce_ms",
           f"must be 0-1000, got {g.debounce_ms}")
    pins: dict[int, str] = {}

    def claim(pin: int | None, key: str) -> None:
        if pin is None:
            return
        _check(0 <= pin <= 27, where, key, f"must be a BCM pin 0-27, got {pin}")
        _check(pin not in pins, where, key, f"pin {pin} is already used by {pins.get(pin)}")
        pins[pin] = key

    claim(g.power_led_pin, "gpio.power_led_pin")
    seen_udp: dict[tuple[str, int], str] = {}
    for grp in cfg.groups:
        k = f"groups.{grp.name}"
        _check(1024 <= grp.port <= 65535, where, f"{k}.port", f"must be 1024-65535, got {grp.port}")
        _check(grp.multicast == "" or _is_multicast(grp.multicast), where, f"{k}.multicast",
               f"must be an IPv4 multicast address (224.0.0.0/4), got {grp.multicast!r}")
        _check(bool(grp.multicast or grp.peers), where, k,
               "needs a multicast address or at least one peer")
        if grp.secret:
            problem = check_secret(grp.secret)
            _check(problem is None, where, f"{k}.secret", problem or "")
        _check(grp.mode in ("half-duplex", "conference"), where, f"{k}.mode",
               f"must be 'half-duplex' or 'conference', got {grp.mode!r}")
        _check(1 <= grp.max_talkers <= 16, where, f"{k}.max_talkers",
               f"must be 1-16, got {grp.max_talkers}")
        _check(0 <= grp.tot_s <= 3600, where, f"{k}.tot_s", f"must be 0-3600, got {grp.tot_s}")
        _check(0 <= grp.emergency_tot_s <= 3600, where, f"{k}.emergency_tot_s",
               f"must be 0-3600, got {grp.emergency_tot_s}")
        _check(grp.tot_warning_s >= 0 and (grp.tot_s == 0 or grp.tot_warning_s < grp.tot_s), where,
               f"{k}.tot_warning_s", f"must be 0 or more and less than tot_s, got {grp.tot_warning_s}")
        for i, peer in enumerate(grp.peers):
            _check(_peer_ok(peer), where, f"{k}.peers[{i}]",
                   f"must be 'host' or 'host:port', got {peer!r}")
        for addr in (grp.multicast, n.bind_address):
            if addr:
                _check((addr, grp.port) not in seen_udp, where, f"{k}.port",
                       f"{addr}:{grp.port} is also used by {seen_udp.get((addr, grp.port))}")
                seen_udp[(addr, grp.port)] = k
    group_names = {grp.name for grp in cfg.groups}
    for p in cfg.ports:
        k = f"ports.{p.name}"
        _check(p.backend in ("alsa", "wav"), where, f"{k}.backend",
               f"must be 'alsa' or 'wav', got {p.backend!r}")
        _check(p.device_rate_hz in (8000, 16000, 32000, 44100, 48000), where,
               f"{k}.device_rate_hz",
               f"must be one of 8000, 16000, 32000, 44100, 48000, got {p.device_rate_hz}")
        if p.backend == "wav":
            _check(bool(p.wav_input or p.wav_output), where, f"{k}.wav_input",
                   "a wav port needs wav_input, wav_output or both")
        _check(p.talk_mode in ("ptt", "vad", "open"), where, f"{k}.talk_mode",
               f"must be 'ptt', 'vad' or 'open', got {p.talk_mode!r}")
        _validate_dsp(p.dsp, f"{k}.dsp", where)
        for i, gname in enumerate(p.groups):
            _check(gname in group_names, where, f"{k}.groups[{i}]",
                   f"no talk group {gname!r} is defined (have: {', '.join(sorted(group_names))})")
        _check(not p.talk_group or p.talk_group in p.groups, where, f"{k}.talk_group",
               f"{p.talk_group!r} must be one of the port's groups {list(p.groups)}")
        _check(0 <= p.priority <= 7, where, f"{k}.priority", f"must be 0-7, got {p.priority}")
        _check(20 <= p.playback_buffer_ms <= 1000, where, f"{k}.playback_buffer_ms",
               f"must be 20-1000, got {p.playback_buffer_ms}")
        claim(p.ptt_pin, f"{k}.ptt_pin")
        claim(p.select_pin, f"{k}.select_pin")
        claim(p.emergency_pin, f"{k}.emergency_pin")
        claim(p.tx_led_pin, f"{k}.tx_led_pin")
        claim(p.rx_led_pin, f"{k}.rx_led_pin")


def _validate_dsp(d: DspSettings, k: str, where: _Where) -> None:
    _check(d.highpass_hz == 0 or 20 <= d.highpass_hz <= 1000, where, f"{k}.highpass_hz",
           f"must be 0 (off) or 20-1000, got {d.highpass_hz}")
    _check(0 <= d.ns_max_attenuation_db <= 40, where, f"{k}.ns_max_attenuation_db",
           f"must be 0-40, got {d.ns_max_attenuation_db}")
    _check(-40 <= d.agc_target_dbfs <= -3, where, f"{k}.agc_target_dbfs",
           f"must be -40 to -3, got {d.agc_target_dbfs}")
    _check(0 <= d.agc_max_gain_db <= 40, where, f"{k}.agc_max_gain_db",
           f"must be 0-40, got {d.agc_max_gain_db}")
    for name in ("agc_attack_ms", "agc_release_ms"):
        value = getattr(d, name)
        _check(20 <= value <= 60000, where, f"{k}.{name}", f"must be 20-60000, got {value}")
    _check(0 < d.vad_threshold <= 100, where, f"{k}.vad_threshold",
           f"must be above 0 and at most 100, got {d.vad_threshold}")
    _check(0 <= d.vad_release <= d.vad_threshold, where, f"{k}.vad_release",
           f"must be between 0 and vad_threshold ({d.vad_threshold}), got {d.vad_release}")
    _check(0 <= d.vad_hangover_ms <= 2000, where, f"{k}.vad_hangover_ms",
           f"must be 0-2000, got {d.vad_hangover_ms}")
    _check(10 <= d.vad_range_db <= 100, where, f"{k}.vad_range_db",
           f"must be 10-100, got {d.vad_range_db}")
    _check(-30 <= d.vad_min_snr_db <= 30, where, f"{k}.vad_min_snr_db",
           f"must be -30 to 30, got {d.vad_min_snr_db}")
    _check(0 <= d.vad_hold_ms <= 10000, where, f"{k}.vad_hold_ms",
           f"must be 0-10000, got {d.vad_hold_ms}")
    _check(0 <= d.vad_preroll_ms <= 1000, where, f"{k}.vad_preroll_ms",
           f"must be 0-1000, got {d.vad_preroll_ms}")
    _check(-20 <= d.limiter_threshold_dbfs <= 0, where, f"{k}.limiter_threshold_dbfs",
           f"must be -20 to 0, got {d.limiter_threshold_dbfs}")


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_multicast(text: str) -> bool:
    return _is_ipv4(text) and ipaddress.IPv4Address(text).is_multicast


def _peer_ok(peer: str) -> bool:
    host, sep, port = peer.rpartition(":") if ":" in peer else (peer, "", "")
    if sep and not (port.isdigit() and 1 <= int(port) <= 65535):
        return False
    return bool(re.fullmatch(r"[A-Za-z0-9.-]+", host))


def parse_peer(peer: str, default_port: int) -> tuple[str, int]:
    """Split ``host[:port]`` into (host, port)."""
    if ":" in peer:
        host, _, port = peer.rpartition(":")
        return host, int(port)
    return peer, default_port
