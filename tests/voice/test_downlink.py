"""Downlink: per-sender streams, loss concealment, mixing and mix-minus."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.codec.opus import OpusEncoder
from gateway.net import rtp
from gateway.voice.downlink import Downlink


def _packets(ssrc: int, n: int, freq: float, start_seq: int = 0) -> list[rtp.RtpPacket]:
    enc = OpusEncoder(16000, 20, 32000, 5, False, 0, False)
    t = np.arange(320 * n) / 16000
    audio = (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return [
        rtp.RtpPacket(111, (start_seq + i) & 0xFFFF, i * 960, ssrc, i == 0,
                      enc.encode(audio[i * 320:(i + 1) * 320]))
        for i in range(n)
    ]


def test_two_senders_are_mixed() -> None:
    dl = Downlink(("ops",), depth_ms=40)
    a, b = _packets(1, 30, 300), _packets(2, 30, 1100)
    out = []
    for pa, pb in zip(a, b, strict=True):
        dl.receive("ops", pa)
        dl.receive("ops", pb)
        out.append(dl.pull(320))
    mix = np.concatenate(out).astype(float)
    spectrum = np.abs(np.fft.rfft(mix[3200:]))
    freqs = np.fft.rfftfreq(len(mix[3200:]), 1 / 16000)
    for f in (300, 1100):
        band = spectrum[(freqs > f - 20) & (freqs < f + 20)].max()
        assert band > 20 * np.median(spectrum), f
    assert dl.receiving
    assert set(dl.senders) == {1, 2}


def test_other_groups_are_ignored() -> None:
    dl = Downlink(("ops",), depth_ms=40)
    for p in _packets(1, 10, 300):
        dl.receive("maintenance", p)
    assert dl.senders == {}
    assert not dl.pull(320).any()


def test_loss_is_concealed_and_counted() -> None:
    dl = Downlink(("ops",), depth_ms=40)
    packets = _packets(7, 40, 440)
    out = []
    for i, p in enumerate(packets):
        if i not in (10, 11, 25):
            dl.receive("ops", p)
        out.append(dl.pull(320))
    for _ in range(5):
        out.append(dl.pull(320))
    t = dl.totals()
    assert t.packets_received == 37
    assert t.packets_lost == 3
    assert t.frames_concealed == 3
    assert t.frames_fec_tried == 2  # 10 (11 is missing too) and 25 had their next packet
    # Concealment keeps the tone going: no frame in the middle of the spurt is silent.
    mid = np.concatenate(out[5:35])
    frames = mid.reshape(-1, 320)
    assert (np.abs(frames).max(axis=1) > 1000).all()


def test_spurt_end_goes_quiet() -> None:
    dl = Downlink(("ops",), depth_ms=40)
    for p in _packets(7, 10, 440):
        dl.receive("ops", p)
    played = [dl.pull(320) for _ in range(15)]
    assert sum(1 for f in played if np.abs(f).max() > 1000) >= 9
    assert not played[-1].any()
    assert not dl.receiving


def _band_levels(dl: Downlink, a: list[rtp.RtpPacket], b: list[rtp.RtpPacket]) -> tuple[float, float]:
    out = []
    for pa, pb in zip(a, b, strict=True):
        dl.receive("ops", pa)
        dl.receive("ops", pb)
        out.append(dl.pull(320))
    mix = np.concatenate(out[15:]).astype(float)
    spectrum = np.abs(np.fft.rfft(mix))
    freqs = np.fft.rfftfreq(len(mix), 1 / 16000)
    return tuple(  # type: ignore[return-value]
        float(spectrum[(freqs > f - 20) & (freqs < f + 20)].max()) for f in (300, 1100))


def test_a_sender_turned_down_and_a_priority_talker_ducking_the_rest() -> None:
    plain = _band_levels(Downlink(("ops",), 40), _packets(1, 40, 300), _packets(2, 40, 1100))
    quieter = Downlink(("ops",), 40)
    quieter.gains[2] = 0.5
    turned = _band_levels(quieter, _packets(1, 40, 300), _packets(2, 40, 1100))
    assert 20 * np.log10(turned[1] / plain[1]) == pytest.approx(-6.0, abs=0.5)
    assert 20 * np.log10(turned[0] / plain[0]) == pytest.approx(0.0, abs=0.5)
    ducking = Downlink(("ops",), 40)
    ducking.priority.add(1)
    ducked = _band_levels(ducking, _packets(1, 40, 300), _packets(2, 40, 1100))
    assert 20 * np.log10(ducked[1] / plain[1]) == pytest.approx(-12.0, abs=1.0)  # the mixer's duck
    assert 20 * np.log10(ducked[0] / plain[0]) == pytest.approx(0.0, abs=0.5)


def test_loud_talkers_together_never_clip() -> None:
    dl = Downlink(("ops",), 40)
    loud = [_packets(i, 20, 200 + 150 * i) for i in range(1, 6)]
    for frame in zip(*loud, strict=True):
        for p in frame:
            dl.receive("ops", p)
        out = dl.pull(320)
        assert np.max(np.abs(out.astype(int))) < 32767
