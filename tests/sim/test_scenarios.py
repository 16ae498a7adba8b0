"""``gateway demo --scenario emergency`` end to end: real UDP/SRTP between three boxes, the
emergency button held through the mock GPIO pins, every box deciding the floor on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sim.scenarios import format_emergency, run_emergency
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
