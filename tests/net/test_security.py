"""Attacks on a live stream: a real talker and listener (rig) with a stranger flooding the listener.

The flood comes from a separate process, paced to the rate the issue names, so the listener's loop
has to turn it away while it plays the real stream.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.rigs.voice import make_rig, talk

FLOODER = textwrap.dedent("""
    import os, random, socket, struct, sys, time
    host, port, rate, seconds, ssrc, pt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    rng = random.Random(5)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.23", 0))
    kinds = [
        lambda: rng.randbytes(rng.randrange(0, 200)),
        lambda: struct.pack("!BBHII", 0x80, pt, rng.randrange(65536), 0, rng.randrange(2**32))
                + rng.randbytes(80),
        lambda: struct.pack("!BBHII", 0x80, pt, rng.randrange(65536), 0, ssrc) + rng.randbytes(80),
        lambda: b"GWA\\x01" + rng.randbytes(rng.randrange(0, 300)),
    ]
    sent, t0 = 0, time.monotonic()
    while (now := time.monotonic() - t0) < seconds:
        while sent < now * rate:
            try:
                s.sendto(kinds[sent % 4](), (host, port))
            except OSError:
                pass
            sent += 1
        time.sleep(0.001)
    print(sent)
""")


async def _run(tmp: Path, flood_per_s: int) -> tuple[float, int, int, int, dict[str, int]]:
    await asyncio.to_thread(tmp.mkdir)
    rig = await make_rig(tmp)
    flooder = None
    if flood_per_s:
        seconds = 0.5 + rig.clip_len / rig.rate + 0.5
        flooder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOODER, rig.listener.address, str(rig.group.port),
            str(flood_per_s), str(seconds), str(rig.talker.port.ssrc),
            str(rig.talker.port.uplink.rtp.payload_type), stdout=subprocess.PIPE,
        )
    try:
        await talk(rig)
    finally:
        flood_sent = int((await flooder.communicate())[0]) if flooder else 0
    heard = rig.heard()
    assert heard.pesq is not None, heard
    stats = rig.listener.port.downlink.totals()
    return (heard.pesq, rig.talker.port.uplink.rtp.packets_sent, stats.packets_received,
            flood_sent, dict(rig.listener.transport.rejected))


async def test_garbage_flood_at_25000_per_second_costs_under_1_percent_and_no_quality(
    tmp_path: Path,
) -> None:
    """Over 10^5 forged datagrams of four kinds interleaved with a real talk spurt, at 25,000 a
    second (the issue asks for 20,000): nothing forged plays, the real stream loses < 1 % and its
    PESQ stays within 0.1 of the same run without the flood."""
    clean_pesq, _, _, _, _ = await _run(tmp_path / "clean", 0)
    pesq, sent, received, flood, rejected = await _run(tmp_path / "flood", 25_000)
    assert flood >= 100_000
    assert received >= 0.99 * sent, (received, sent)
    assert abs(pesq - clean_pesq) <= 0.1, (pesq, clean_pesq)
    # Nothing from the flood was played: only the talker reached the downlink, and the flood was
    # counted (what the kernel dropped on a full buffer, if anything, never reached us).
    assert sum(rejected.values()) >= 0.9 * flood, (rejected, flood)
    for reason in ("unknown_sender", "auth_failure", "announce_malformed", "bad_version"):
        assert rejected.get(reason, 0) > 0, rejected
