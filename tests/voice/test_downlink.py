"""Downlink: per-sender streams, loss concealment and FEC, delay following, mixing and mix-minus.

Arrivals and pulls are stamped by an injected clock the tests drive: one 20 ms tick at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.audio.wav import read_wav
from gateway.codec.opus import OpusEncoder, has_fec
from gateway.net import rtp
from gateway.voice.downlink import Downlink

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "speech" / "speech.wav"
TICK = 320  # 20 ms at 16 kHz


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance_ms(self, ms: float) -> None:
        self.t += ms / 1000


def _encode(ssrc: int, audio: np.ndarray, fec: bool = False, start_seq: int = 0) -> list[rtp.RtpPacket]:
    enc = OpusEncoder(16000, 20, 32000, 5, fec, 10 if fec else 0, False)
    return [
        rtp.RtpPacket(111, (start_seq + i) & 0xFFFF, i * 960, ssrc, i == 0,
                      enc.encode(audio[i * TICK:(i + 1) * TICK]))
        for i in range(len(audio) // TICK)
    ]


def _packets(ssrc: int, n: int, freq: float, start_seq: int = 0) -> list[rtp.RtpPacket]:
    t = np.arange(TICK * n) / 16000
    return _encode(ssrc, (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16), start_seq=start_seq)


def _run(dl: Downlink, clock: Clock, *streams: list[rtp.RtpPacket | None], extra: int = 10) -> np.ndarray:
    """Tick by tick: each stream's packet for this tick arrives, then one tick is pulled."""
    out = []
    for i in range(max(len(s) for s in streams) + extra):
        for s in streams:
            if i < len(s) and (p := s[i]) is not None:
                dl.receive("ops", p)
        out.append(dl.pull(TICK))
        clock.advance_ms(20)
    return np.concatenate(out)


def _downlink(depth_ms: int = 40, **kwargs: int) -> tuple[Downlink, Clock]:
    clock = Clock()
    return Downlink(("ops",), depth_ms, clock=clock, **kwargs), clock


def test_two_senders_are_mixed() -> None:
    dl, clock = _downlink()
    mix = _run(dl, clock, _packets(1, 30, 300), _packets(2, 30, 1100), extra=0).astype(float)
    spectrum = np.abs(np.fft.rfft(mix[3200:]))
    freqs = np.fft.rfftfreq(len(mix[3200:]), 1 / 16000)
    for f in (300, 1100):
        band = spectrum[(freqs > f - 20) & (freqs < f + 20)].max()
        assert band > 20 * np.median(spectrum), f
    assert dl.receiving
    assert set(dl.senders) == {1, 2}


def test_other_groups_are_ignored() -> None:
    dl, _ = _downlink()
    for p in _packets(1, 10, 300):
        dl.receive("maintenance", p)
    assert dl.senders == {}
    assert not dl.pull(TICK).any()


def test_playout_starts_at_the_floor() -> None:
    """On a clean network the first packet plays two ticks (the 40 ms floor) after it came."""
    dl, clock = _downlink(40)
    out = _run(dl, clock, _packets(7, 20, 440), extra=0).reshape(-1, TICK)
    loud = np.abs(out).max(axis=1) > 1000
    assert not loud[:2].any() and loud[2:].all()
    assert dl.totals().delay_ms == pytest.approx(40.0)
    assert dl.totals().target_ms == pytest.approx(40.0)


def test_loss_is_concealed_and_counted() -> None:
    dl, clock = _downlink()
    packets: list[rtp.RtpPacket | None] = list(_packets(7, 40, 440))
    for i in (10, 11, 25):
        packets[i] = None
    out = _run(dl, clock, packets, extra=5)
    t = dl.totals()
    assert t.packets_received == 37
    assert t.packets_lost == 3
    assert t.frames_concealed == 3  # this sender sends no FEC: the two attempts fell back to PLC
    assert t.frames_fec_tried == 2  # 11 (12 was here when its turn came) and 25
    assert t.frames_fec_recovered == 0
    # Concealment keeps the tone going: no frame in the middle of the spurt is silent.
    frames = out[5 * TICK:35 * TICK].reshape(-1, TICK)
    assert (np.abs(frames).max(axis=1) > 1000).all()


def _speech() -> np.ndarray:
    clip, rate = read_wav(SPEECH)
    assert rate == 16000
    return clip[: len(clip) // TICK * TICK]


def test_a_lossy_stream_with_fec_gets_frames_recovered_from_the_next_packet() -> None:
    """Speech from an encoder with in-band FEC loses every 7th packet: each lost frame whose
    successor carries LBRR data is rebuilt from it, and the result is closer to the loss-free
    playout than plain concealment of the same losses."""
    speech = _speech()

    def heard(fec: bool, lossy: bool) -> tuple[np.ndarray, Downlink]:
        dl, clock = _downlink(40)
        packets: list[rtp.RtpPacket | None] = list(_encode(9, speech, fec=fec))
        if lossy:
            packets = [None if i % 7 == 3 else p for i, p in enumerate(packets)]
        return _run(dl, clock, packets).astype(float), dl

    def error(fec: bool) -> float:
        clean, _ = heard(fec, lossy=False)
        lossy, dl = heard(fec, lossy=True)
        t = dl.totals()
        assert t.packets_lost == sum(1 for i in range(len(speech) // TICK) if i % 7 == 3)
        if fec:
            with_lbrr = sum(has_fec(p.payload) for i, p in enumerate(_encode(9, speech, fec=True))
                            if i % 7 == 4)
            assert t.frames_fec_tried == t.packets_lost  # the look-ahead keeps the next one at hand
            assert t.frames_fec_recovered == with_lbrr > t.packets_lost // 2
            assert t.frames_concealed == t.packets_lost - with_lbrr
        else:
            assert t.frames_fec_recovered == 0
        return float(np.sum((lossy - clean) ** 2) / np.sum(clean**2))

    assert error(fec=True) < 0.5 * error(fec=False)


def test_spurt_end_goes_quiet() -> None:
    dl, clock = _downlink()
    played = _run(dl, clock, _packets(7, 10, 440), extra=10).reshape(-1, TICK)
    assert (np.abs(played[2:12]).max(axis=1) > 1000).all()
    # After the last packet up to 100 ms of concealment fades out, then the sender is idle.
    assert not played[-3:].any()
    assert not dl.receiving
    t = dl.totals()
    assert (t.packets_lost, t.frames_concealed) == (0, 0)  # the fade-out is not loss


def test_a_restarted_sender_is_heard_again() -> None:
    dl, clock = _downlink()
    _run(dl, clock, _packets(7, 10, 440), extra=10)
    again = _run(dl, clock, _packets(7, 10, 440, start_seq=30000), extra=0).reshape(-1, TICK)
    assert (np.abs(again[2:]).max(axis=1) > 1000).all()
    assert dl.senders[7].jitter.stats.restarts == 1


def test_clock_drift_is_absorbed_in_pauses() -> None:
    """A sender whose clock runs 0.5 % fast (an exaggerated drift) talks in 1 s bursts with 0.4 s
    pauses for 14 s: frames are dropped in the pauses, the delay stays near the target, and no
    burst of tone loses a frame."""
    t = np.arange(TICK * 700) / 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    tone[(t % 1.4) >= 1.0] = 0
    packets = _encode(5, tone)
    dl, clock = _downlink(40)
    out = []
    next_arrival = 0.0
    now = 0.0
    i = 0
    while i < len(packets) or now < next_arrival + 200:
        while i < len(packets) and next_arrival <= now:
            dl.receive("ops", packets[i])
            i += 1
            next_arrival += 20 * (1 - 0.005)
        out.append(dl.pull(TICK))
        clock.advance_ms(20)
        now += 20
    stats = dl.totals()
    assert 3 <= stats.frames_dropped <= 4  # 0.5 % of 14 s is 70 ms
    assert stats.frames_inserted == stats.packets_lost == stats.frames_concealed == 0
    frames = np.concatenate(out).reshape(-1, TICK)
    level = np.abs(frames).max(axis=1)
    # Every burst plays whole: runs of loud frames are 49-50 long (1 s, give or take the edges).
    runs, n = [], 0
    for loud in level > 4000:
        if loud:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    assert len(runs) == 10 and all(49 <= r <= 51 for r in runs), runs


def test_reception_report_gives_loss_since_the_last_call() -> None:
    dl, clock = _downlink()
    packets: list[rtp.RtpPacket | None] = list(_packets(3, 50, 440))
    for i in range(5, 50, 10):
        packets[i] = None
    _run(dl, clock, packets[:25], extra=0)
    first = dl.reception_report()
    assert set(first) == {3}
    assert first[3]["lost"] == 2 and first[3]["frames"] == 23  # two ticks of the floor not yet due
    assert first[3]["loss_fraction"] == pytest.approx(2 / 23)
    assert first[3]["jitter_ms"] == pytest.approx(0.0, abs=1e-6)
    _run(dl, clock, packets[25:], extra=5)
    second = dl.reception_report()[3]
    assert second["lost"] == 3 and second["frames"] == 27
    assert dl.reception_report()[3]["frames"] == 0


def test_has_fec_reads_the_lbrr_flag() -> None:
    speech = _speech()[: TICK * 50]
    with_fec = [has_fec(p.payload) for p in _encode(1, speech, fec=True)]
    assert sum(with_fec) > 25
    assert not any(has_fec(p.payload) for p in _encode(1, speech, fec=False))
    assert not has_fec(b"")
    assert not has_fec(bytes([0x80 | 0x78, 0xFF]))  # CELT only: never LBRR
    # SILK wideband 20 ms (config 9), code 3 with two VBR frames: frame 0 starts after its length.
    assert has_fec(bytes([(9 << 3) | 3, 0x80 | 2, 1, 0x40, 0x00]))
    assert not has_fec(bytes([(9 << 3) | 3, 0x80 | 2, 1, 0x80, 0x00]))  # only the VAD flag


def _band_levels(dl: Downlink, clock: Clock, a: list[rtp.RtpPacket],
                 b: list[rtp.RtpPacket]) -> tuple[float, float]:
    mix = _run(dl, clock, a, b, extra=0)[15 * TICK:].astype(float)
    spectrum = np.abs(np.fft.rfft(mix))
    freqs = np.fft.rfftfreq(len(mix), 1 / 16000)
    return tuple(  # type: ignore[return-value]
        float(spectrum[(freqs > f - 20) & (freqs < f + 20)].max()) for f in (300, 1100))


def test_a_sender_turned_down_and_a_priority_talker_ducking_the_rest() -> None:
    plain = _band_levels(*_downlink(), _packets(1, 40, 300), _packets(2, 40, 1100))
    quieter, clock = _downlink()
    quieter.gains[2] = 0.5
    turned = _band_levels(quieter, clock, _packets(1, 40, 300), _packets(2, 40, 1100))
    assert 20 * np.log10(turned[1] / plain[1]) == pytest.approx(-6.0, abs=0.5)
    assert 20 * np.log10(turned[0] / plain[0]) == pytest.approx(0.0, abs=0.5)
    ducking, clock = _downlink()
    ducking.priority.add(1)
    ducked = _band_levels(ducking, clock, _packets(1, 40, 300), _packets(2, 40, 1100))
    assert 20 * np.log10(ducked[1] / plain[1]) == pytest.approx(-12.0, abs=1.0)  # the mixer's duck
    assert 20 * np.log10(ducked[0] / plain[0]) == pytest.approx(0.0, abs=0.5)


def test_loud_talkers_together_never_clip() -> None:
    dl, clock = _downlink()
    out = _run(dl, clock, *[_packets(i, 20, 200 + 150 * i) for i in range(1, 6)])
    assert np.max(np.abs(out.astype(int))) < 32767


def test_the_positional_constructor_still_works_with_the_real_clock() -> None:
    dl = Downlink(("ops",), 40)  # as gateway/voice/port.py builds it
    assert dl.max_delay_ms == 200
    assert not dl.pull(TICK).any()
