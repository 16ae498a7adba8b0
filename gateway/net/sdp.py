"""SDP export: let a standard player (ffmpeg/ffplay, GStreamer) listen to a talk group.

``gateway sdp --group NAME`` joins the group as a silent member with the box's configuration: it
announces itself, takes the fresh announcements the senders answer with, and prints an SDP
(RFC 4566) with one audio media section per sender, each with that sender's SRTP key in
``a=crypto`` (RFC 4568) and its ``a=ssrc``. Every sender of a group has its own key (DESIGN.md,
"Wire"), and SDES carries one key per media section, so a player decodes the group's multicast
stream as one stream per sender: each section drops the other senders' packets as unauthenticated
(ffmpeg logs "HMAC mismatch" for them) and the group's announcements as not RTP. ffmpeg opens one
socket per section on the same multicast port (it sets SO_REUSEADDR for multicast) and can mix
them with ``amix``; ``--sender`` exports one sender only (for ffplay, which plays one stream)."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config import Config, GroupSettings
from gateway.net.keys import load_secret
from gateway.net.srtp import GroupSecurity
from gateway.net.udp import UdpTransport


@dataclass(frozen=True)
class SenderKey:
    """One sender of a group as a monitoring player needs it."""

    ssrc: int
    epoch: int
    key: bytes


def build_sdp(
    group: GroupSettings, senders: SenderKey | Sequence[SenderKey], payload_type: int, frame_ms: int,
    address: str, ttl: int = 1, site: str = "",
) -> str:
    """The SDP text for one or more senders of ``group``, received at ``address`` (multicast or
    unicast): one audio media section per sender, each with that sender's key and SSRC."""
    chosen = [senders] if isinstance(senders, SenderKey) else list(senders)
    if not chosen:
        raise ValueError("an SDP needs at least one sender")
    multicast = address == group.multicast
    conn = f"IN IP4 {address}/{ttl}" if multicast else f"IN IP4 {address}"
    who = (f"sender {chosen[0].ssrc:#010x}" if len(chosen) == 1
           else f"{len(chosen)} senders")
    lines = [
        "v=0",
        f"o=- {secrets.randbits(31)} 1 IN IP4 {address}",
        f"s={site + ' ' if site else ''}talk group {group.name}, {who}",
        f"c={conn}",
        "t=0 0",
    ]
    for sender in chosen:
        inline = base64.b64encode(sender.key).decode()
        lines += [
            f"m=audio {group.port} RTP/SAVP {payload_type}",
            f"i=sender {sender.ssrc:#010x}",
            f"a=rtpmap:{payload_type} opus/48000/2",
            f"a=fmtp:{payload_type} useinbandfec=1;stereo=0;sprop-stereo=0",
            f"a=ptime:{frame_ms}",
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}",
            f"a=ssrc:{sender.ssrc}",
            "a=recvonly",
        ]
    return "\r\n".join(lines) + "\r\n"


async def discover_senders(config: Config, group_name: str, wait_s: float) -> list[SenderKey]:
    """Join ``group_name`` as a silent member for ``wait_s`` and return the senders announced."""
    group = config.group(group_name)
    sec = GroupSecurity(group.name, load_secret(group.name, group.secret, config.gateway.state_dir))
    transport = UdpTransport(config.network, [group], config.codec.payload_type,
                             lambda g, p: None, {group.name: sec})
    await transport.start()
    announcer = asyncio.create_task(transport.announce_forever(), name="sdp-announce")
    try:
        await asyncio.sleep(wait_s)
    finally:
        announcer.cancel()
        transport.close()
    return [SenderKey(ssrc, epoch, sec.export_key(ssrc, epoch)) for ssrc, epoch in sec.senders()]
