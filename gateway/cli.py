"""Command line: ``gateway run``, ``gateway demo``, ``gateway config check``, ``gateway dsp``,
``gateway vad``, ``gateway keygen``, ``gateway sdp``, ``gateway status``, ``gateway ctl``,
``gateway broker-config``, ``gateway bridge``.

Exit status: 0 success, 1 the job failed, 2 bad arguments or a bad configuration (the message names
the file and key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__, config
from gateway.errors import ConfigError, DeviceError, GatewayError

log = logging.getLogger("gateway")

EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="gateway", description="Voice gateway appliance: group voice between boxes."
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway daemon from its configuration")
    run.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                     help=f"configuration file (default {config.DEFAULT_PATH}; plus its conf.d/)")

    demo = sub.add_parser("demo", help="simulate a site on this machine and measure what is heard")
    demo.add_argument("--input", type=Path, metavar="WAV",
                      help="speech clip to play (default: shared/testdata speech, else espeak-ng)")
    demo.add_argument("--out", type=Path, metavar="DIR", help="keep the recordings in DIR")
    demo.add_argument("--gateways", type=int, default=3, help="gateways in the site (2-9)")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--scenario", choices=("talk", "emergency", "two-sites"), default="talk",
                      help="talk: one talker, everyone listens (default); emergency: an emergency "
                           "call breaks in on a talker; two-sites: two sites' brokers bridged "
                           "through a central one carry a wide-area group's voice")
    demo.add_argument("--hands-free", action="store_true",
                      help="the talker's port uses voice detection (talk_mode vad), no button")
    bad_net = demo.add_argument_group(
        "network impairment", "voice goes through a seeded lossy relay instead of clean multicast")
    bad_net.add_argument("--loss", type=float, default=0.0, metavar="PCT",
                         help="mean packet loss on every link, 0-100")
    bad_net.add_argument("--burst", type=float, default=0.0, metavar="MS",
                         help="mean length of a loss burst (Gilbert model; 0 = independent losses)")
    bad_net.add_argument("--jitter-ms", type=float, default=0.0, metavar="MS",
                         help="extra one-way delay per packet, uniform in 0..MS")
    bad_net.add_argument("--reorder", type=float, default=0.0, metavar="PCT",
                         help="share of packets held back behind their successors")
    bad_net.add_argument("--seed", type=int, default=1, help="seed of the relay's randomness")

    dsp = sub.add_parser("dsp", help="run a port's uplink chain over a WAV file (for installers)")
    dsp.add_argument("input", type=Path, metavar="IN.wav", help="16-bit WAV, any rate, mono or stereo")
    dsp.add_argument("output", type=Path, metavar="OUT.wav", help="processed audio, same rate")
    _dsp_source_args(dsp)

    vad = sub.add_parser("vad", help="print the voice detector's decision per 10 ms of a WAV file")
    vad.add_argument("input", type=Path, metavar="IN.wav", help="16-bit WAV, any rate")
    _dsp_source_args(vad)

    status = sub.add_parser("status", help="what the running daemon is doing (ports, groups, broker)")
    status.add_argument("--json", action="store_true", help="print the daemon's JSON reply")
    _socket_args(status)

    ctl = sub.add_parser("ctl", help="drive the running daemon: ptt, emergency, select, volume, reload")
    ctl_sub = ctl.add_subparsers(dest="ctl_command", required=True, metavar="ACTION")
    for name, helptext in (("ptt", "press (on) or release (off) a port's push-to-talk"),
                           ("emergency", "start (on) or end (off) an emergency call from a port")):
        c = ctl_sub.add_parser(name, help=helptext)
        c.add_argument("port", help="the port's name")
        c.add_argument("state", choices=("on", "off"))
        _socket_args(c)
    c = ctl_sub.add_parser("select", help="make a port talk on another of its groups")
    c.add_argument("port", help="the port's name")
    c.add_argument("group", help="one of the port's groups")
    _socket_args(c)
    c = ctl_sub.add_parser("volume", help="set a port's playback volume")
    c.add_argument("port", help="the port's name")
    c.add_argument("volume_db", type=float, metavar="DB", help="-40 to +12")
    _socket_args(c)
    c = ctl_sub.add_parser("reload", help="re-read the configuration (like systemctl reload)")
    _socket_args(c)

    from gateway.control import brokercli

    brokercli.add_parsers(sub)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = cfg_sub.add_parser("check", help="validate and print the effective configuration")
    check.add_argument("path", nargs="?", type=Path, default=None,
                       help=f"configuration file (default: --config or {config.DEFAULT_PATH})")
    check.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help=argparse.SUPPRESS)

    sdp = sub.add_parser("sdp", help="print an SDP so a standard player (ffplay) can listen in")
    sdp.add_argument("--group", required=True, metavar="NAME", help="the talk group")
    sdp.add_argument("--sender", metavar="GATEWAY/PORT",
                     help="which sender (gateway id/port name, or SSRC in hex) if several announce")
    sdp.add_argument("--address", metavar="IP",
                     help="where the player receives (default: the group's multicast address)")
    sdp.add_argument("--wait-s", type=float, default=2.0, help="how long to listen for senders")
    sdp.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                     help=f"configuration file (default {config.DEFAULT_PATH})")

    keygen = sub.add_parser("keygen", help="make a new talk-group secret")
    keygen.add_argument("--group", metavar="NAME",
                        help="store it as NAME's secret in the state directory instead of printing it")
    keygen.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="state directory (default: gateway.state_dir of --config)")
    keygen.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help=argparse.SUPPRESS)
    return parser


def _sdp(args: argparse.Namespace) -> int:
    from gateway.net.sdp import build_sdp, discover_senders
    from gateway.voice.port import port_ssrc

    cfg = config.load(args.config)
    names = [g.name for g in cfg.groups]
    if args.group not in names:
        print(f"gateway: sdp: no talk group {args.group!r} (have: {', '.join(names)})", file=sys.stderr)
        return EXIT_USAGE
    group = cfg.group(args.group)
    address = args.address or group.multicast
    if not address:
        print(f"gateway: sdp: group {args.group!r} has no multicast address: add the player's host "
              "to its peers and pass --address with that host's IP", file=sys.stderr)
        return EXIT_USAGE
    if not 0.1 <= args.wait_s <= 60:
        print("gateway: sdp: --wait-s must be 0.1-60", file=sys.stderr)
        return EXIT_USAGE
    wanted: int | None = None
    if args.sender:
        gw, _, port = args.sender.partition("/")
        try:
            wanted = int(args.sender, 16) if not port else port_ssrc(cfg.gateway.site, gw, port)
        except ValueError:
            print(f"gateway: sdp: --sender {args.sender!r}: use GATEWAY/PORT or a hex SSRC",
                  file=sys.stderr)
            return EXIT_USAGE
    found = _run_until_signalled(discover_senders(cfg, args.group, args.wait_s)) or []
    chosen = [s for s in found if wanted is None or s.ssrc == wanted]
    if not chosen:
        what = f"sender {wanted:#010x} was not" if wanted is not None else "no sender was"
        heard = ", ".join(f"{s.ssrc:#010x}" for s in found) or "none"
        print(f"gateway: sdp: {what} heard on group {args.group!r} in {args.wait_s:g} s "
              f"(heard: {heard})", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(build_sdp(group, chosen, cfg.codec.payload_type, cfg.codec.frame_ms, address,
                               cfg.network.multicast_ttl, cfg.gateway.site))
    whose = "this sender's" if len(chosen) == 1 else f"these {len(chosen)} senders'"
    print(f"gateway: sdp: the keys in this SDP decrypt (and could forge) {whose} voice until they "
          "restart: keep the file private", file=sys.stderr)
    return 0


def _socket_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                        help=f"the daemon's configuration (default {config.DEFAULT_PATH}): where its "
                             "control socket is")


def _control(args: argparse.Namespace) -> int:
    """``gateway status`` and ``gateway ctl …``: one command to the daemon's control socket."""
    from gateway.control.local import request, socket_path

    cfg = config.load(args.config)
    if args.command == "status":
        command: dict[str, Any] = {"command": "status"}
    elif args.ctl_command == "ptt":
        command = {"command": "ptt", "port": args.port, "pressed": args.state == "on"}
    elif args.ctl_command == "emergency":
        command = {"command": "emergency", "port": args.port, "on": args.state == "on"}
    elif args.ctl_command == "select":
        command = {"command": "select_group", "port": args.port, "group": args.group}
    elif args.ctl_command == "volume":
        command = {"command": "set_volume", "port": args.port, "volume_db": args.volume_db}
    else:
        command = {"command": "reload"}
    path = socket_path(cfg.gateway.state_dir)
    try:
        reply = request(path, command)
    except OSError as exc:
        print(f"gateway: no running gateway answers at {path} ({exc.strerror or exc}); is it "
              "running with this configuration (systemctl status gateway)?", file=sys.stderr)
        return EXIT_FAILED
    if not reply.get("ok"):
        print(f"gateway: {args.command}: {reply.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    result = reply.get("result", {})
    if args.command == "status" and not args.json:
        print(_format_status(result))
    else:
        print(json.dumps(result, indent=2 if args.command == "status" else None))
    return 0


def _format_status(st: dict[str, Any]) -> str:
    """``gateway status`` for a person at the box."""
    lines = [f"gateway {st['gateway']} (site {st['site']}, version {st['version']}), up "
             f"{st['uptime_s']:.0f} s, broker: {st['broker']}"]
    for name, p in st["ports"].items():
        state = ("EMERGENCY " if p["emergency"] else "") + (
            "talking" if p["transmitting"] else "hearing" if p["receiving"] else "idle")
        lines.append(f"  port {name}: {state}; talks on {p['talk_group']} (listens: "
                     f"{', '.join(p['groups'])}), {p['talk_mode']}, priority {p['priority']}, "
                     f"volume {p['volume_db']:+.0f} dB")
    for name, g in st["groups"].items():
        who = ", ".join(g["talkers"]) or "nobody"
        alarm = f"; EMERGENCY from {g['emergency']}" if g["emergency"] else ""
        lines.append(f"  group {name} ({g['mode']}): talking: {who}{alarm}")
    return "\n".join(lines)


def _keygen(args: argparse.Namespace) -> int:
    from gateway.net import keys

    secret = keys.generate_secret()
    if not args.group:
        print(secret)
        return 0
    if not config.NAME_RE.match(args.group):
        print(f"gateway: keygen: --group {args.group!r}: not a valid group name", file=sys.stderr)
        return EXIT_USAGE
    state_dir = args.state_dir or Path(config.load(args.config).gateway.state_dir)
    path = keys.secret_path(str(state_dir), args.group)
    if path.exists():
        print(f"gateway: keygen: {path} exists; remove it first to replace the group's secret",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        keys.write_secret(str(state_dir), args.group, secret)
    except OSError as exc:
        print(f"gateway: keygen: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {path}: copy this file to the same place on every box of group {args.group!r}",
          file=sys.stderr)
    return 0


def _dsp_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port-config", type=Path, metavar="TOML",
        help="DSP settings: a gateway config (first port, or --port), a file with a [dsp] table, "
             "or one holding the keys of [ports.NAME.dsp] (default: the built-in defaults)")
    parser.add_argument("--port", metavar="NAME", help="which port of a gateway config to use")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "config":
            return _config_check(args.path or args.config)
        if args.command == "run":
            return _run(args.config)
        if args.command == "demo":
            return _demo(args)
        if args.command in ("dsp", "vad"):
            return _dsp_file(args)
        if args.command == "keygen":
            return _keygen(args)
        if args.command == "sdp":
            return _sdp(args)
        if args.command in ("status", "ctl"):
            return _control(args)
        if args.command in ("broker-config", "bridge"):
            from gateway.control import brokercli

            return brokercli.run(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("gateway: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


def _config_check(path: Path) -> int:
    cfg = config.load(path)
    print(f"# effective configuration, from: {', '.join(cfg.sources)}")
    print(_to_toml(config.to_dict(cfg)))
    return 0


def _run(path: Path) -> int:
    cfg = config.load(path)
    from gateway.app import App

    app = App(cfg)
    app.config_loader = lambda: config.load(path)

    def reload() -> None:
        # SIGHUP (systemctl reload): a bad new config is refused and the running one kept.
        try:
            app.reload_from_source()
        except GatewayError as exc:
            log.error("reload refused, still running the previous configuration: %s", exc)

    _run_until_signalled(app.run(), on_hangup=reload)
    return 0


def _demo(args: argparse.Namespace) -> int:
    if not 2 <= args.gateways <= 9:
        print("gateway: demo: --gateways must be 2-9", file=sys.stderr)
        return EXIT_USAGE
    if args.input is not None and not args.input.is_file():
        print(f"gateway: demo: --input {args.input}: no such file", file=sys.stderr)
        return EXIT_USAGE
    impairment = None
    if args.loss or args.burst or args.jitter_ms or args.reorder:
        from gateway.net.impair import ImpairmentSettings

        try:
            impairment = ImpairmentSettings(loss_pct=args.loss, burst_ms=args.burst,
                                            jitter_ms=args.jitter_ms, reorder_pct=args.reorder,
                                            packet_ms=20, seed=args.seed)
        except ValueError as exc:
            print(f"gateway: demo: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    if args.scenario != "talk" and (impairment is not None or args.hands_free):
        print(f"gateway: demo: --scenario {args.scenario} runs on a clean network with push-to-talk",
              file=sys.stderr)
        return EXIT_USAGE
    if args.scenario == "two-sites":
        from gateway.sim.two_sites import format_two_sites, run_two_sites

        linked = _run_until_signalled(run_two_sites(args.input, args.out))
        if linked is None:
            return 128 + signal.SIGTERM
        print(json.dumps(linked.to_json()) if args.json else format_two_sites(linked))
        return 0
    if args.scenario == "emergency":
        from gateway.sim.scenarios import format_emergency, run_emergency

        emergency = _run_until_signalled(run_emergency(args.input, args.out, args.gateways))
        if emergency is None:
            return 128 + signal.SIGTERM
        print(json.dumps(emergency.to_json()) if args.json else format_emergency(emergency))
        return 0
    from gateway.sim.demo import format_table, run_demo

    result = _run_until_signalled(
        run_demo(args.input, args.out, args.gateways, args.hands_free, impairment))
    if result is None:  # stopped by SIGTERM; everything it started has been cleaned up
        return 128 + signal.SIGTERM
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(format_table(result))
        if args.out:
            print(f"recordings kept in {args.out}")
    return 0 if all(li.delay_ms is not None for li in result.listeners) else EXIT_FAILED


def _dsp_file(args: argparse.Namespace) -> int:
    import numpy as np

    from gateway.audio.wav import read_wav, write_wav
    from gateway.dsp.offline import process_array, vad_array

    settings = (config.load_dsp(args.port_config, args.port) if args.port_config
                else config.DspSettings())
    if not args.input.is_file():
        print(f"gateway: {args.command}: {args.input}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "dsp" and not args.output.resolve().parent.is_dir():
        print(f"gateway: dsp: {args.output}: its folder does not exist", file=sys.stderr)
        return EXIT_USAGE
    try:
        pcm, rate = read_wav(args.input)
    except DeviceError as exc:  # not a WAV we can read: a bad argument, not a failed job
        print(f"gateway: {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if len(pcm) == 0:
        print(f"gateway: {args.command}: {args.input}: no audio in the file", file=sys.stderr)
        return EXIT_USAGE
    x = pcm.astype(np.float32) / np.float32(32768)
    if args.command == "vad":
        print(json.dumps({"frame_ms": 10, "speech": vad_array(x, rate, settings)}))
        return 0
    y = process_array(x, rate, settings)
    try:
        write_wav(args.output, np.clip(np.round(y * 32768), -32768, 32767).astype(np.int16), rate)
    except OSError as exc:
        print(f"gateway: dsp: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _run_until_signalled(
    coro: Coroutine[Any, Any, Any], on_hangup: Callable[[], None] | None = None
) -> Any:
    """Run ``coro`` on a fresh loop; SIGTERM cancels it like Ctrl-C does, so cleanup always runs.
    SIGHUP calls ``on_hangup`` on the loop, when given."""

    async def main() -> Any:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGHUP)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        return None


def _to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Print TOML-shaped data (tables of scalars and string arrays) as TOML."""
    scalars, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            scalars.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(scalars)
    for key, value in tables:
        name = f"{prefix}{key}"
        inner = _to_toml(value, f"{name}.")
        has_scalars = any(not isinstance(v, dict) for v in value.values())
        block = f"[{name}]\n{inner}" if has_scalars or not value else inner
        out += ("\n\n" if out else "") + block
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
