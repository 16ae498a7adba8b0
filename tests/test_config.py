"""Configuration: the example file, conf.d merging, errors naming file and key, defaults, ``config check``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway import cli, config
from gateway.config import (
    CodecSettings,
    Config,
    DspSettings,
    GatewaySettings,
    GpioSettings,
    GroupSettings,
    MqttSettings,
    NetworkSettings,
    PortSettings,
)
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "etc" / "gateway.toml"

# A small valid configuration the error cases below break one key at a time.
BASE = """\
[codec]
bitrate_bps = 24000

[mqtt]
host = "broker.lan"
password = "s3cret-pw"

[groups.ops]
multicast = "239.255.10.1"

[groups.maint]
port = 5006
peers = ["10.0.0.2", "10.0.0.3:6000"]

[ports.desk]
groups = ["ops", "maint"]
ptt_pin = 17
"""


def _write(directory: Path, text: str, name: str = "gateway.toml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    """Run ``gateway config check PATH`` in-process: (exit status, stdout, stderr)."""
    status = cli.main(["config", "check", str(path)])
    out, err = capsys.readouterr()
    return status, out, err


def _printed_toml(out: str) -> dict[str, object]:
    header, _, body = out.partition("\n")
    assert header.startswith("# effective configuration, from: ")
    return tomllib.loads(body)


# -- the example --------------------------------------------------------------------------------


def test_example_loads() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.sources[0] == str(EXAMPLE)
    assert cfg.gateway.id == "plant-north"
    assert [g.name for g in cfg.groups] == ["ops", "maintenance"]
    assert cfg.group("ops").multicast == "239.255.10.1"
    (desk,) = cfg.ports
    assert (desk.name, desk.groups, desk.talk_group, desk.ptt_pin) == (
        "desk", ("ops", "maintenance"), "ops", 17
    )


def test_config_check_prints_the_example_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _check(capsys, EXAMPLE)
    assert status == 0
    assert err == ""
    assert str(EXAMPLE) in out.partition("\n")[0]
    # What it prints is TOML that loads back into the very same configuration.
    printed = _printed_toml(out)
    assert config.from_dict(printed) == dataclasses.replace(config.load(EXAMPLE), sources=())


def test_config_check_as_a_command(tmp_path: Path) -> None:
    good = _write(tmp_path / "good", BASE)
    bad = _write(tmp_path / "bad", BASE.replace("bitrate_bps = 24000", "bitrate_bps = 1"))
    ok = subprocess.run([sys.executable, "-m", "gateway", "config", "check", str(good)],
                        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert 'host = "broker.lan"' in ok.stdout
    failed = subprocess.run([sys.executable, "-m", "gateway", "config", "check", str(bad)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert failed.returncode == 2
    assert f"{bad}: codec.bitrate_bps: must be 6000-128000, got 1" in failed.stderr
    assert failed.stdout == ""


def test_example_documents_the_defaults() -> None:
    # etc/gateway.toml is the commented default file: where it sets a key that has a default,
    # it shows that default (the box's identity, pins, groups and ports are examples, not defaults).
    example = tomllib.loads(EXAMPLE.read_text())
    for section, cls in [("codec", CodecSettings), ("network", NetworkSettings), ("mqtt", MqttSettings)]:
        assert example[section] == dataclasses.asdict(cls()), section
    assert example["gateway"]["state_dir"] == GatewaySettings().state_dir
    gpio = GpioSettings()
    assert (example["gpio"]["pin_factory"], example["gpio"]["debounce_ms"],
            example["gpio"]["emergency_hold_ms"]) == (
        gpio.pin_factory, gpio.debounce_ms, gpio.emergency_hold_ms
    )
    desk = example["ports"]["desk"]
    port = PortSettings(name="x")
    for key in ("backend", "capture_device", "playback_device", "device_rate_hz", "talk_mode",
                "playback_buffer_ms"):
        assert desk[key] == getattr(port, key), key
    group = GroupSettings(name="x")
    for key in ("port", "mode", "max_talkers", "tot_s", "tot_warning_s", "emergency_tot_s"):
        assert example["groups"]["ops"][key] == getattr(group, key), key
    assert desk["priority"] == port.priority
    assert desk["dsp"] == dataclasses.asdict(DspSettings())


# -- conf.d -------------------------------------------------------------------------------------


def test_conf_d_merges_in_name_order(tmp_path: Path) -> None:
    main = _write(tmp_path, BASE)
    first = _write(tmp_path, """\
[codec]
bitrate_bps = 16000
fec = true

[mqtt]
port = 8883

[groups.maint]
peers = ["10.0.0.9"]

[groups.radio]
multicast = "239.255.10.3"
port = 5008
""", "conf.d/10-site.toml")
    second = _write(tmp_path, """\
[codec]
bitrate_bps = 20000

[ports.desk]
groups = ["ops", "radio"]
""", "conf.d/20-local.toml")
    _write(tmp_path, "[codec]\nbitrate_bps = 1\n", "conf.d/30-disabled.toml.off")  # not *.toml
    cfg = config.load(main)
    assert cfg.sources == (str(main), str(first), str(second))
    # A later file's scalar wins, whatever came before.
    assert cfg.codec.bitrate_bps == 20000
    # Tables merge key by key: each file's other keys survive.
    assert cfg.codec.fec is True
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.password) == ("broker.lan", 8883, "s3cret-pw")
    # An array is a value: replaced, not appended to; other keys of its table stay.
    assert cfg.group("maint").peers == ("10.0.0.9",)
    assert cfg.group("maint").port == 5006
    # A new named table joins the existing ones.
    assert [g.name for g in cfg.groups] == ["ops", "maint", "radio"]
    (desk,) = cfg.ports
    assert (desk.groups, desk.talk_group, desk.ptt_pin) == (("ops", "radio"), "ops", 17)


def test_conf_d_order_is_by_name_not_by_creation(tmp_path: Path) -> None:
    main = _write(tmp_path, BASE)
    _write(tmp_path, "[codec]\ncomplexity = 9\n", "conf.d/b.toml")
    _write(tmp_path, "[codec]\ncomplexity = 1\n", "conf.d/a.toml")
    cfg = config.load(main)
    assert cfg.codec.complexity == 9
    assert [Path(s).name for s in cfg.sources] == ["gateway.toml", "a.toml", "b.toml"]


def test_config_check_lists_every_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = _write(tmp_path, BASE)
    extra = _write(tmp_path, "[network]\njitter_min_ms = 60\n", "conf.d/50-jitter.toml")
    status, out, _ = _check(capsys, main)
    assert status == 0
    assert out.partition("\n")[0] == f"# effective configuration, from: {main}, {extra}"
    assert _printed_toml(out)["network"]["jitter_min_ms"] == 60  # type: ignore[index]


# -- errors: exit status 2, naming the file and the dotted key ------------------------------------


def _set(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


# (name, configuration text, dotted key, words the message must contain)
ERRORS: list[tuple[str, str, str, str]] = [
    ("bad TOML syntax", BASE + "[codec\n", "", "invalid TOML"),
    ("unknown section", BASE + "[audio]\nrate = 1\n", "audio", "unknown section"),
    ("unknown key", _set("bitrate_bps = 24000", "bitrate = 24000"), "codec.bitrate",
     "bitrate_bps"),
    ("unknown key in a named table", BASE + "[groups.ops.extra]\n", "groups.ops.extra", "unknown key"),
    ("string for an int", _set("bitrate_bps = 24000", 'bitrate_bps = "24000"'), "codec.bitrate_bps",
     "must be an integer, got a string"),
    ("int for a bool", _set("[mqtt]\n", "[mqtt]\nenabled = 1\n"), "mqtt.enabled",
     "must be true or false, got an integer"),
    ("bool for an int", _set("ptt_pin = 17", "ptt_pin = true"), "ports.desk.ptt_pin",
     "must be an integer, got a boolean"),
    ("float for an int", _set("bitrate_bps = 24000", "bitrate_bps = 24000.0"), "codec.bitrate_bps",
     "must be an integer, got a number"),
    ("string for a number", _set("[mqtt]\n", '[mqtt]\nreconnect_min_s = "1"\n'),
     "mqtt.reconnect_min_s", "must be a number"),
    ("string for an array", _set('groups = ["ops", "maint"]', 'groups = "ops"'), "ports.desk.groups",
     "must be an array of strings"),
    ("section not a table", "codec = 5\n", "codec", "must be a table"),
    ("frame_ms 30", _set("[codec]\n", "[codec]\nframe_ms = 30\n"), "codec.frame_ms",
     "must be 10 or 20, got 30"),
    ("mqtt port 0", _set("[mqtt]\n", "[mqtt]\nport = 0\n"), "mqtt.port", "must be 1-65535, got 0"),
    ("group address not multicast", _set('multicast = "239.255.10.1"', 'multicast = "10.1.2.3"'),
     "groups.ops.multicast", "multicast address"),
    ("group address not an address", _set('multicast = "239.255.10.1"', 'multicast = "ops.lan"'),
     "groups.ops.multicast", "multicast address"),
    ("port naming an undefined group", _set('groups = ["ops", "maint"]', 'groups = ["ops", "radio"]'),
     "ports.desk.groups[1]", "no talk group 'radio'"),
    ("talk group not among the port's groups", _set("ptt_pin = 17", 'ptt_pin = 17\ntalk_group = "x"'),
     "ports.desk.talk_group", "must be one of the port's groups"),
    ("two buttons on one pin", BASE + '[ports.desk2]\ngroups = ["ops"]\nptt_pin = 17\n',
     "ports.desk2.ptt_pin", "pin 17 is already used by ports.desk.ptt_pin"),
    ("a button on the power LED's pin", BASE + "[gpio]\npower_led_pin = 17\n", "ports.desk.ptt_pin",
     "pin 17 is already used by gpio.power_led_pin"),
    ("pin out of range", _set("ptt_pin = 17", "ptt_pin = 28"), "ports.desk.ptt_pin",
     "must be a BCM pin 0-27"),
    ("bad group name", BASE + '[groups."no spaces"]\nmulticast = "239.1.1.1"\n',
     "groups.no spaces", "name must be"),
    ("bad peer", _set('"10.0.0.3:6000"', '"10.0.0.3:99999"'), "groups.maint.peers[1]",
     "'host' or 'host:port'"),
    ("unknown talk mode", _set("ptt_pin = 17", 'ptt_pin = 17\ntalk_mode = "vox"'),
     "ports.desk.talk_mode", "'ptt', 'vad' or 'open'"),
    ("unknown group mode", _set('multicast = "239.255.10.1"', 'multicast = "239.255.10.1"\nmode = "duplex"'),
     "groups.ops.mode", "'half-duplex' or 'conference'"),
    ("conference of 20", _set('multicast = "239.255.10.1"', 'multicast = "239.255.10.1"\nmax_talkers = 20'),
     "groups.ops.max_talkers", "must be 1-16, got 20"),
    ("warning after the time-out", _set('multicast = "239.255.10.1"',
                                         'multicast = "239.255.10.1"\ntot_s = 10\ntot_warning_s = 10'),
     "groups.ops.tot_warning_s", "less than tot_s"),
    ("client certificate without TLS", _set("[mqtt]\n", '[mqtt]\ncertfile = "/c.pem"\nkeyfile = "/c.key"\n'),
     "mqtt.tls", "must be true when cafile, certfile or keyfile is set"),
    ("certificate without its key", _set("[mqtt]\n", '[mqtt]\ntls = true\ncertfile = "/c.pem"\n'),
     "mqtt.certfile", "certfile and keyfile go together"),
    ("broker login not the gateway's id", _set("[mqtt]\n", '[mqtt]\nusername = "someone"\n'),
     "mqtt.username", "must be this gateway's id"),
    ("priority 8", _set("ptt_pin = 17", "ptt_pin = 17\npriority = 8"), "ports.desk.priority",
     "must be 0-7, got 8"),
    ("emergency button on the PTT pin", _set("ptt_pin = 17", "ptt_pin = 17\nemergency_pin = 17"),
     "ports.desk.emergency_pin", "pin 17 is already used by ports.desk.ptt_pin"),
    ("emergency hold too short", BASE + "[gpio]\nemergency_hold_ms = 50\n", "gpio.emergency_hold_ms",
     "must be 200-10000, got 50"),
    ("unknown dsp key", BASE + "[ports.desk.dsp]\nnoise = true\n", "ports.desk.dsp.noise",
     "unknown key"),
    ("dsp not a table", _set("ptt_pin = 17", "ptt_pin = 17\ndsp = 3"), "ports.desk.dsp",
     "must be a table"),
    ("dsp strength out of range", BASE + "[ports.desk.dsp]\nns_max_attenuation_db = 60.0\n",
     "ports.desk.dsp.ns_max_attenuation_db", "must be 0-40, got 60.0"),
    ("vad release above threshold", BASE + "[ports.desk.dsp]\nvad_release = 2.0\n",
     "ports.desk.dsp.vad_release", "must be between 0 and vad_threshold"),
    ("vad range too small", BASE + "[ports.desk.dsp]\nvad_range_db = 3.0\n",
     "ports.desk.dsp.vad_range_db", "must be 10-100, got 3.0"),
    ("vad snr out of range", BASE + "[ports.desk.dsp]\nvad_min_snr_db = -40.0\n",
     "ports.desk.dsp.vad_min_snr_db", "must be -30 to 30, got -40.0"),
    ("dsp wrong type", BASE + '[ports.desk.dsp]\nagc = "on"\n', "ports.desk.dsp.agc",
     "must be true or false, got a string"),
]


@pytest.mark.parametrize(("text", "key", "words"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_configuration_names_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, words: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert (info.value.path, info.value.key) == (str(path), key)
    assert words in info.value.message
    assert isinstance(info.value, ValueError)

    status, out, err = _check(capsys, path)
    assert status == cli.EXIT_USAGE == 2
    assert out == ""
    where = f"{path}: {key}: " if key else f"{path}: "
    assert err.startswith(f"gateway: {where}")
    assert words in err


def test_missing_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere" / "gateway.toml"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert (info.value.path, info.value.key, info.value.message) == (str(path), "", "file not found")
    status, out, err = _check(capsys, path)
    assert status == 2
    assert out == ""
    assert err == f"gateway: {path}: file not found\n"


# A bad value that came from a conf.d file names that file, not the main one.
CONF_D_ERRORS: list[tuple[str, str, str]] = [
    ("scalar", "[codec]\nframe_ms = 30\n", "codec.frame_ms"),
    ("wrong type", "[mqtt]\nenabled = 1\n", "mqtt.enabled"),
    ("unknown key", "[codec]\nbitrate = 1\n", "codec.bitrate"),
    ("unknown section", "[audio]\n", "audio"),
    ("new group", '[groups.radio]\nmulticast = "10.0.0.1"\n', "groups.radio.multicast"),
    ("array element", '[ports.desk]\ngroups = ["ops", "nope"]\n', "ports.desk.groups[1]"),
    ("peer", '[groups.maint]\npeers = ["ok", "bad:port"]\n', "groups.maint.peers[1]"),
    ("duplicate pin", "[ports.desk]\ntx_led_pin = 17\n", "ports.desk.tx_led_pin"),
]


@pytest.mark.parametrize(("text", "key"), [e[1:] for e in CONF_D_ERRORS], ids=[e[0] for e in CONF_D_ERRORS])
def test_bad_value_from_conf_d_names_that_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    main = _write(tmp_path, BASE)
    _write(tmp_path, "[network]\njitter_min_ms = 60\n", "conf.d/10-fine.toml")
    culprit = _write(tmp_path, text, "conf.d/20-culprit.toml")
    _write(tmp_path, "[network]\njitter_min_ms = 80\n", "conf.d/30-fine.toml")
    with pytest.raises(ConfigError) as info:
        config.load(main)
    assert (info.value.path, info.value.key) == (str(culprit), key)
    status, _, err = _check(capsys, main)
    assert status == 2
    assert err.startswith(f"gateway: {culprit}: {key}: ")


def test_bad_toml_in_conf_d_names_that_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = _write(tmp_path, BASE)
    culprit = _write(tmp_path, "[codec\n", "conf.d/50-broken.toml")
    status, _, err = _check(capsys, main)
    assert status == 2
    assert err.startswith(f"gateway: {culprit}: invalid TOML")


def test_a_later_file_can_fix_an_earlier_value(tmp_path: Path) -> None:
    # Validation runs on the merged result: only the effective value matters.
    main = _write(tmp_path, _set("bitrate_bps = 24000", "bitrate_bps = 1"))
    _write(tmp_path, "[codec]\nbitrate_bps = 24000\n", "conf.d/50-fix.toml")
    assert config.load(main).codec.bitrate_bps == 24000


# -- the password -------------------------------------------------------------------------------


def test_config_check_masks_the_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE)
    status, out, err = _check(capsys, path)
    assert status == 0
    assert "s3cret-pw" not in out + err
    assert _printed_toml(out)["mqtt"]["password"] == "********"  # type: ignore[index]
    assert config.load(path).mqtt.password == "s3cret-pw"  # masked in the output only


def test_an_empty_password_is_shown_as_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _set('password = "s3cret-pw"\n', ""))
    status, out, _ = _check(capsys, path)
    assert status == 0
    assert _printed_toml(out)["mqtt"]["password"] == ""  # type: ignore[index]


def test_a_bad_password_type_does_not_echo_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _set('password = "s3cret-pw"', "password = 12345678"))
    status, _, err = _check(capsys, path)
    assert status == 2
    assert "mqtt.password" in err
    assert "12345678" not in err


# -- defaults -----------------------------------------------------------------------------------


def test_an_empty_file_gives_every_default(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    assert config.load(path) == Config(sources=(str(path),))


def test_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
[groups.ops]
multicast = "239.255.10.1"

[ports.desk]
groups = ["ops"]
""")
    cfg = config.load(path)
    gw = cfg.gateway
    assert (gw.id, gw.site, gw.state_dir) == ("gateway", "site", "/var/lib/gateway")
    c = cfg.codec
    assert (c.frame_ms, c.bitrate_bps, c.complexity, c.fec, c.expected_loss_pct, c.dtx, c.payload_type) == (
        20, 32000, 5, False, 0, False, 111
    )
    n = cfg.network
    assert (n.bind_address, n.multicast_interface, n.multicast_ttl, n.jitter_min_ms, n.jitter_max_ms,
            n.max_datagram_bytes) == ("0.0.0.0", "", 1, 0, 200, 1500)
    assert c.adaptive_fec
    m = cfg.mqtt
    assert (m.enabled, m.host, m.port, m.username, m.password, m.keepalive_s, m.topic_root) == (
        True, "localhost", 1883, "", "", 30, "gateway/v1"
    )
    assert (m.reconnect_min_s, m.reconnect_max_s) == (1.0, 30.0)
    assert (cfg.gpio.pin_factory, cfg.gpio.power_led_pin, cfg.gpio.debounce_ms) == ("native", None, 30)
    assert cfg.groups == (GroupSettings(name="ops", port=5004, multicast="239.255.10.1", peers=()),)
    (desk,) = cfg.ports
    assert desk == PortSettings(
        name="desk", backend="alsa", capture_device="default", playback_device="default",
        device_rate_hz=48000, pace_realtime=False, wav_input="", wav_output="", talk_mode="ptt",
        groups=("ops",), talk_group="ops", ptt_pin=None, tx_led_pin=None, rx_led_pin=None,
        playback_buffer_ms=80,
    )


@pytest.mark.parametrize(
    ("groups", "talk_group", "expected"),
    [
        ('["ops", "maint"]', None, "ops"),
        ('["maint", "ops"]', None, "maint"),
        ('["ops", "maint"]', "maint", "maint"),
        ("[]", None, ""),  # a listen-nowhere port has no talk group
    ],
)
def test_talk_group_defaults_to_the_first_group(
    tmp_path: Path, groups: str, talk_group: str | None, expected: str
) -> None:
    port = f"groups = {groups}\n" + (f'talk_group = "{talk_group}"\n' if talk_group else "")
    path = _write(tmp_path, _set('groups = ["ops", "maint"]\nptt_pin = 17\n', port))
    (desk,) = config.load(path).ports
    assert desk.talk_group == expected


def test_from_dict_reports_the_default_file_without_origins() -> None:
    with pytest.raises(ConfigError) as info:
        config.from_dict({"codec": {"frame_ms": 30}}, default_file="inline.toml")
    assert (info.value.path, info.value.key) == ("inline.toml", "codec.frame_ms")
    assert str(info.value) == "inline.toml: codec.frame_ms: must be 10 or 20, got 30"


# -- DSP settings files (gateway dsp / gateway vad --port-config) ---------------------------------


def test_dsp_settings_from_a_bare_file_a_dsp_table_or_a_gateway_config(tmp_path: Path) -> None:
    bare = _write(tmp_path, "ns_max_attenuation_db = 12.0\n", "bare.toml")
    table = _write(tmp_path, "[dsp]\nagc = false\n", "table.toml")
    full = _write(tmp_path, BASE + "[ports.desk.dsp]\nhighpass_hz = 150.0\n")
    assert config.load_dsp(bare).ns_max_attenuation_db == 12.0
    assert config.load_dsp(table).agc is False
    assert config.load_dsp(full).highpass_hz == 150.0
    assert config.load_dsp(full, "desk").highpass_hz == 150.0
    with pytest.raises(ConfigError, match="no such port"):
        config.load_dsp(full, "radio")
    bad = _write(tmp_path, "vad_threshold = -1.0\n", "bad.toml")
    with pytest.raises(ConfigError) as info:
        config.load_dsp(bad)
    assert (info.value.path, info.value.key) == (str(bad), "dsp.vad_threshold")
