"""A simulated site: several gateways on this machine, each with a WAV-backed port.

Each gateway gets its own loopback address (127.0.0.11, .12, ...) so the boxes talk over real UDP
sockets exactly as on a LAN, one talk group carried by IP multicast on the loopback interface, and
the embedded broker for presence. PTT is pressed through gpiozero's MockFactory pins, i.e. through
the same Panel code a real button goes through.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import (
    CodecSettings,
    Config,
    GatewaySettings,
    GpioSettings,
    GroupSettings,
    MqttSettings,
    NetworkSettings,
    PortSettings,
)
from gateway.net.keys import generate_secret

PTT_PIN = 17
TX_LED_PIN = 22
RX_LED_PIN = 23
POWER_LED_PIN = 24
EMERGENCY_PIN = 27
PORT_NAME = "radio"
HUB_ADDRESS = "127.0.0.9"
"""Where the simulated site's impairment hub listens (the gateways are 127.0.0.11 and up)."""
GROUP = "ops"


@dataclass(frozen=True)
class SiteLayout:
    """Addresses of one simulated site (chosen fresh per run so parallel runs don't cross-talk)."""

    addresses: tuple[str, ...]
    multicast: str
    udp_port: int
    secret: str = field(default_factory=generate_secret, repr=False)
    """The talk group's secret, shared by the site's gateways (fresh per run)."""


def pick_layout(
    gateways: int, rng: random.Random | None = None, first_host: int = 11, subnet: int = 0
) -> SiteLayout:
    """Loopback addresses (127.0.subnet.first_host, ...), a multicast group and a UDP port free on
    all of them and on the subnet's hub address (127.0.subnet.9: :data:`HUB_ADDRESS` for subnet 0;
    other subnets let several simulated sites run side by side)."""
    rng = rng or random.Random()
    addresses = tuple(f"127.0.{subnet}.{first_host + i}" for i in range(gateways))
    hub = f"127.0.{subnet}.9"
    for _ in range(50):
        port = rng.randrange(20000, 60000, 2)
        if all(_udp_free(a, port) for a in (*addresses, hub)):
            multicast = f"239.255.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
            return SiteLayout(addresses, multicast, port)
    raise OSError("no free UDP port found on the loopback addresses")


def _udp_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def gateway_config(
    index: int,
    layout: SiteLayout,
    broker_port: int,
    wav_input: str,
    wav_output: str,
    rate_hz: int,
    site: str = "sim",
    jitter_min_ms: int = 0,
    jitter_max_ms: int = 200,
    codec: CodecSettings | None = None,
    frame_ms: int = 20,
    talk_mode: str = "ptt",
    via: str = "",
    emergency_pin: int | None = None,
) -> Config:
    """The config of gateway ``index`` of the simulated site (ids gw-a, gw-b, ...).

    ``via``: an address to send the group's voice to instead of multicast (an impairment hub that
    forwards it to the other gateways, :class:`gateway.net.impair.ImpairedHub`)."""
    gid = f"gw-{chr(ord('a') + index)}"
    return Config(
        gateway=GatewaySettings(id=gid, site=site, state_dir=""),
        network=NetworkSettings(
            bind_address=layout.addresses[index], multicast_interface="127.0.0.1",
            jitter_min_ms=jitter_min_ms, jitter_max_ms=jitter_max_ms,
            advertise=False,  # simulated boxes need no mDNS (and it would take 2 s to probe)
        ),
        codec=codec or CodecSettings(frame_ms=frame_ms),
        mqtt=MqttSettings(
            host="127.0.0.1", port=broker_port, keepalive_s=5, reconnect_min_s=0.2,
            reconnect_max_s=2.0,
        ),
        gpio=GpioSettings(pin_factory="mock", power_led_pin=POWER_LED_PIN),
        groups=(GroupSettings(name=GROUP, port=layout.udp_port, multicast="" if via else layout.multicast,
                             peers=(via,) if via else (), secret=layout.secret),),
        ports=(
            PortSettings(
                name=PORT_NAME, backend="wav", device_rate_hz=rate_hz, wav_input=wav_input,
                wav_output=wav_output, talk_mode=talk_mode, groups=(GROUP,), talk_group=GROUP,
                ptt_pin=PTT_PIN, tx_led_pin=TX_LED_PIN, rx_led_pin=RX_LED_PIN,
                emergency_pin=emergency_pin,
            ),
        ),
        sources=(f"<simulated {gid}>",),
    )


def output_path(out_dir: Path, gateway_id: str) -> Path:
    """Where a simulated gateway's port records what it heard."""
    return out_dir / f"{gateway_id}-{PORT_NAME}.wav"
