"""``gateway demo --scenario emergency`` end to end: real UDP/SRTP between three boxes, the
emergency button held through the mock GPIO pins, every box deciding the floor on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sim.scenarios import format_emergency, run_emergency
from gateway.sim.two_sites import format_two_sites, run_two_sites
from tests.rigs.voice import SPEECH

pytestmark = pytest.mark.slow


async def test_an_emergency_call_breaks_in_and_is_heard_everywhere(tmp_path: Path) -> None:
    result = await run_emergency(SPEECH, tmp_path)
    text = format_emergency(result)
    print(text)
    assert result.talker_stopped_after_ms is not None and result.talker_stopped_after_ms < 200, text
    assert result.raised_on == 3
    for h in result.hearings:
        assert h.pesq is not None and h.pesq >= 3.5, h
        assert h.delay_ms is not None and h.delay_ms < 150, h
        assert h.emergency_raised and "emergency" in h.cues
    talker = result.hearings[0]
    assert talker.gateway == "gw-a" and talker.cues == ["emergency"]  # why it went off the air
    assert result.floor[0]["preempted"] == 1 and result.floor[1]["granted"] >= 1
    assert "emergency raised on 3 of 3 gateways" in text
    # Every box published the alert, start and end, and the console's command ended the call.
    assert sorted(a["gateway"] for a in result.alerts if a["state"] == "started") == ["gw-a", "gw-b", "gw-c"]
    assert sorted(a["gateway"] for a in result.alerts if a["state"] == "ended") == ["gw-a", "gw-b", "gw-c"]
    assert {a["port"] for a in result.alerts if a["gateway"] == "gw-b"} == {"radio"}
    assert result.end_reply is not None and result.end_reply["ok"], result.end_reply
    assert result.to_json()["scenario"] == "emergency"


async def test_two_sites_carry_a_wide_area_group_through_the_central_broker(tmp_path: Path) -> None:
    """Two site brokers bridged through a third (the bridge `gateway bridge` writes), a wan group:
    the talker at alpha is heard at bravo, and only through the brokers (the sites' LANs are
    apart). The first talk spurt trails the LAN's figures (see the README: mosquitto 2.0.11's
    bridge socket keeps Nagle's algorithm on); the second matches them."""
    result = await run_two_sites(SPEECH, tmp_path)
    text = format_two_sites(result)
    print(text)
    assert result.keys_after_s is not None, text  # the announcements crossed both bridges
    assert result.lan_packets_at_listener == 0
    assert result.voice_over_mqtt_sent == result.packets_sent == result.voice_over_mqtt_received
    assert result.packets_received == result.packets_sent and result.packets_lost == 0
    assert result.delay_ms is not None and result.delay_ms < 150, text
    assert result.second_delay_ms is not None and result.second_delay_ms < 150, text
    # The first spurt is heard but its quality is not asserted: its second packet waits behind
    # Nagle on mosquitto 2.0.11's bridge socket while the listener's buffer learns the path
    # (PESQ 2.31-3.30 in runs; an open problem, see the README). By the second spurt the buffer
    # has learned it: 4.16 in every run.
    assert result.pesq is not None, text
    assert result.second_pesq is not None and result.second_pesq >= 3.8, text
    assert result.to_json()["scenario"] == "two-sites"
