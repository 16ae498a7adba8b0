"""``gateway broker-config …`` and ``gateway bridge``: the site broker's files, for a technician.

The files come from :mod:`gateway.control.brokerconf` (whose generated files explain every line).
Site and topic root are read from the gateway's configuration, so the broker's access rules match
the topics the boxes use. Files are written atomically, mode 0640; as root they are given to the
``mosquitto`` group when it exists (mosquitto reads them as its own user).
"""

from __future__ import annotations

import argparse
import grp
import os
import sys
from pathlib import Path

from gateway import config
from gateway.control import brokerconf as bc

EXIT_FAILED = 1
EXIT_USAGE = 2


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``broker-config`` and ``bridge`` to the CLI."""
    broker = sub.add_parser("broker-config", help="write the site broker's mosquitto files (ACL, users)")
    actions = broker.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    render = actions.add_parser("render", help="the broker's config and ACL for this site")
    render.add_argument("--listen", action="append", default=[], metavar="ADDR:PORT",
                        help="plain MQTT listener (repeatable; default 127.0.0.1:1883)")
    render.add_argument("--tls-listen", metavar="ADDR:PORT", help="TLS listener (needs the three files)")
    render.add_argument("--cafile", default="", help="CA certificate (TLS)")
    render.add_argument("--certfile", default="", help="the broker's certificate (TLS)")
    render.add_argument("--keyfile", default="", help="the broker's private key (TLS)")
    render.add_argument("--require-cert", action="store_true",
                        help="TLS clients must show a certificate; its CN is their user name")
    render.add_argument("--gateway", action="append", default=[], metavar="ID[:GROUP,GROUP]",
                        help="a gateway and the talk groups it may command (repeatable)")
    render.add_argument("--console", action="append", default=[], metavar="NAME",
                        help="a console user: reads everything, sends commands (repeatable)")
    render.add_argument("--password-file", default=bc.DEFAULT_PASSWORD_FILE)
    render.add_argument("--acl-file", default=bc.DEFAULT_ACL_FILE)
    render.add_argument("--persistence-dir", default="", help="keep retained messages here (off)")
    render.add_argument("--conf-out", type=Path, required=True, help="where to write mosquitto's config")
    render.add_argument("--acl-out", type=Path, help="where to write the ACL (default: --acl-file)")
    _config_arg(render)
    passwd = actions.add_parser("passwd", help="add, change or remove a broker user")
    passwd.add_argument("--password-file", type=Path, default=Path(bc.DEFAULT_PASSWORD_FILE))
    passwd.add_argument("--user", metavar="NAME", help="the user (a gateway's id, a console's name)")
    how = passwd.add_mutually_exclusive_group()
    how.add_argument("--generate", action="store_true", help="make a random password and print it once")
    how.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd.add_argument("--remove", action="append", default=[], metavar="NAME", help="remove a user")

    bridge = sub.add_parser("bridge", help="write the mosquitto bridge linking this site to a central broker")
    bridge.add_argument("--remote", action="append", required=True, metavar="HOST:PORT",
                        help="the central broker, or each node of a cluster (repeatable)")
    bridge.add_argument("--name", default="central", help="the link's name (default central)")
    bridge.add_argument("--username", default="", help="user at the centre (default: the site name)")
    bridge.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    bridge.add_argument("--tls", action="store_true", help="TLS to the centre (port 8883 usually)")
    bridge.add_argument("--cafile", default="", help="CA of the centre's certificate (default: system)")
    bridge.add_argument("--certfile", default="", help="this site's client certificate")
    bridge.add_argument("--keyfile", default="", help="this site's client key")
    bridge.add_argument("--out", type=Path, required=True,
                        help="e.g. /etc/mosquitto/conf.d/bridge-central.conf")
    _config_arg(bridge)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                        help="this box's configuration, for site and topic root "
                             f"(default {config.DEFAULT_PATH})")


def run(args: argparse.Namespace) -> int:
    """Carry out ``broker-config`` or ``bridge``; the exit status."""
    try:
        if args.command == "bridge":
            return _bridge(args)
        if args.broker_command == "render":
            return _render(args)
        return _passwd(args)
    except ValueError as exc:  # a name, address or option brokerconf refuses
        print(f"gateway: {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"gateway: {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _address(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit():
        raise ValueError(f"{text!r}: use HOST:PORT")
    return host, int(port)


def _group() -> str | None:
    """Give files to the mosquitto group when we can (root, and the group exists)."""
    if os.geteuid() != 0:
        return None
    try:
        grp.getgrnam("mosquitto")
    except KeyError:
        return None
    return "mosquitto"


def _render(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    listeners = [bc.Listener(*_address(a, 1883)) for a in args.listen] or [bc.Listener()]
    if args.tls_listen:
        host, port = _address(args.tls_listen, 8883)
        listeners.append(bc.Listener(host, port, args.cafile, args.certfile, args.keyfile,
                                     require_certificate=args.require_cert,
                                     use_identity_as_username=args.require_cert))
    gateways = []
    for entry in args.gateway:
        gid, _, groups = entry.partition(":")
        gateways.append(bc.GatewayAccess(gid, tuple(g for g in groups.split(",") if g)))
    conf = bc.BrokerConf(tuple(listeners), args.password_file, args.acl_file, args.persistence_dir,
                         title=f"site {cfg.gateway.site}")
    access = bc.SiteAccess(cfg.gateway.site, cfg.mqtt.topic_root, tuple(gateways), tuple(args.console))
    conf_text, acl_text = bc.render_broker_conf(conf), bc.render_site_acl(access)
    group = _group()
    bc.write_text_atomic(args.conf_out, conf_text, group=group)
    acl_out = args.acl_out or Path(args.acl_file)
    bc.write_text_atomic(acl_out, acl_text, group=group)
    print(f"wrote {args.conf_out} and {acl_out}; add users with `gateway broker-config passwd`, "
          "then restart mosquitto", file=sys.stderr)
    return 0


def _passwd(args: argparse.Namespace) -> int:
    if not args.user and not args.remove:
        print("gateway: broker-config passwd: give --user NAME (with --generate or --password-stdin) "
              "or --remove NAME", file=sys.stderr)
        return EXIT_USAGE
    passwords = {}
    if args.user:
        if args.generate:
            password = bc.new_password()
        elif args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            print("gateway: broker-config passwd: --generate or --password-stdin (a password is "
                  "never taken on the command line, where other users could read it)", file=sys.stderr)
            return EXIT_USAGE
        if not password:
            print("gateway: broker-config passwd: empty password", file=sys.stderr)
            return EXIT_USAGE
        passwords[args.user] = password
    bc.set_passwords(args.password_file, passwords, remove=args.remove, group=_group())
    if args.user and args.generate:
        print(password)  # once, for the gateway's mqtt.password
    return 0


def _bridge(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else ""
    bridge = bc.Bridge(cfg.gateway.site, tuple(_address(r, 8883 if args.tls else 1883) for r in args.remote),
                       name=args.name, topic_root=cfg.mqtt.topic_root, username=args.username,
                       password=password, tls=args.tls, cafile=args.cafile, certfile=args.certfile,
                       keyfile=args.keyfile)
    bc.write_text_atomic(args.out, bc.render_bridge(bridge), group=_group())
    print(f"wrote {args.out}: restart mosquitto to link site {cfg.gateway.site} to "
          f"{', '.join(args.remote)}", file=sys.stderr)
    return 0
