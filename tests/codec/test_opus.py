"""Opus over real libopus: frame sizes, packet durations, loss handling, error translation, fidelity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import opuslib_next
import pytest

from gateway.audio.wav import read_wav
from gateway.codec.opus import DTX_SILENCE_MAX_BYTES, OpusDecoder, OpusEncoder, packet_samples
from gateway.errors import CodecError

RATE = 16000
SPEECH = Path("/work/shared/testdata/speech/speech.wav")


def _encoder(frame_ms: int = 20, **overrides: Any) -> OpusEncoder:
    settings: dict[str, Any] = dict(
        bitrate_bps=32000, complexity=5, fec=False, expected_loss_pct=0, dtx=False
    )
    settings.update(overrides)
    return OpusEncoder(RATE, frame_ms, **settings)


def _sine(samples: int, hz: float = 440.0, rate: int = RATE, amplitude: int = 8000) -> npt.NDArray[np.int16]:
    t = np.arange(samples)
    return (amplitude * np.sin(2 * np.pi * hz * t / rate)).astype(np.int16)


@pytest.fixture(scope="module")
def speech() -> npt.NDArray[np.int16]:
    if not SPEECH.is_file():
        pytest.skip(f"{SPEECH} is not available")
    samples, rate = read_wav(SPEECH)
    assert rate == RATE
    return samples


def _frames(signal: npt.NDArray[np.int16], n: int) -> list[npt.NDArray[np.int16]]:
    return [signal[i:i + n] for i in range(0, len(signal) - n + 1, n)]


# -- frame sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame_ms", "settings"),
    [
        (20, {}),
        (10, {}),
        (20, {"bitrate_bps": 6000, "complexity": 0}),
        (10, {"bitrate_bps": 128000, "complexity": 10}),
        (20, {"fec": True, "expected_loss_pct": 20}),
        (20, {"dtx": True}),
    ],
    ids=["20ms", "10ms", "20ms-low", "10ms-high", "20ms-fec", "20ms-dtx"],
)
def test_encode_decode_gives_one_frame_per_packet(
    speech: npt.NDArray[np.int16], frame_ms: int, settings: dict[str, Any]
) -> None:
    enc = _encoder(frame_ms, **settings)
    dec = OpusDecoder(RATE)
    frame = RATE * frame_ms // 1000
    assert enc.frame_samples == frame
    for pcm in _frames(speech[: RATE // 2], frame):
        packet = enc.encode(pcm)
        assert packet
        out = dec.decode(packet)
        assert out.dtype == np.int16
        assert len(out) == frame
        assert packet_samples(packet, RATE) == frame


def test_dtx_sends_tiny_packets_in_silence_that_still_decode_to_a_frame() -> None:
    enc, dec = _encoder(dtx=True), OpusDecoder(RATE)
    packets = [enc.encode(np.zeros(320, dtype=np.int16)) for _ in range(40)]
    tiny = [p for p in packets if len(p) <= DTX_SILENCE_MAX_BYTES]
    assert len(tiny) > len(packets) // 2
    assert all(len(dec.decode(p)) == 320 for p in tiny)


# -- packet_samples -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "rate", "samples"),
    [
        (b"", RATE, 0),
        (bytes([0 << 3 | 0]), RATE, 160),  # SILK NB 10 ms, one frame
        (bytes([1 << 3 | 0]), RATE, 320),  # SILK NB 20 ms
        (bytes([2 << 3 | 0]), RATE, 640),  # SILK NB 40 ms
        (bytes([3 << 3 | 0]), RATE, 960),  # SILK NB 60 ms
        (bytes([9 << 3 | 0]), 48000, 960),  # SILK WB 20 ms at 48 kHz
        (bytes([12 << 3 | 0]), RATE, 160),  # hybrid SWB 10 ms
        (bytes([15 << 3 | 0]), RATE, 320),  # hybrid FB 20 ms
        (bytes([16 << 3 | 0]), RATE, 40),  # CELT NB 2.5 ms
        (bytes([17 << 3 | 0]), RATE, 80),  # CELT NB 5 ms
        (bytes([31 << 3 | 0]), RATE, 320),  # CELT FB 20 ms
        (bytes([31 << 3 | 1]), RATE, 640),  # code 1: two equal frames
        (bytes([31 << 3 | 2, 1]), RATE, 640),  # code 2: two frames of different sizes
        (bytes([31 << 3 | 3, 3]), RATE, 960),  # code 3: 3 frames of 20 ms
        (bytes([31 << 3 | 3, 0x80 | 0x40 | 6]), RATE, 1920),  # code 3, VBR+padding flags, 6 frames
        (bytes([3 << 3 | 1]), RATE, 1920),  # 2 x 60 ms: 120 ms, the longest allowed
        (bytes([31 << 3 | 3, 0]), RATE, 0),  # code 3 with 0 frames: invalid
        (bytes([31 << 3 | 3]), RATE, 0),  # code 3 without its frame-count byte
        (bytes([31 << 3 | 3, 7]), RATE, 0),  # 140 ms: over the 120 ms limit
        (bytes([3 << 3 | 3, 3]), RATE, 0),  # 3 x 60 ms: over the limit
        (b"\xff" * 7, RATE, 0),  # garbage: code 3 claiming 63 frames
    ],
)
def test_packet_samples_reads_the_toc(payload: bytes, rate: int, samples: int) -> None:
    assert packet_samples(payload, rate) == samples


@pytest.mark.parametrize("frame_ms", [2.5, 5, 10, 20, 40, 60, 80, 100, 120])
def test_packet_samples_matches_the_decoded_length_of_real_packets(frame_ms: float) -> None:
    # Our encoder only makes 10/20 ms packets; a 48 kHz libopus encoder makes every duration
    # (40-120 ms CELT packets are multi-frame, code 2/3) for a 16 kHz decoder to read.
    enc = opuslib_next.Encoder(48000, 1, "audio")
    n = int(48 * frame_ms)
    packet = enc.encode(_sine(n, rate=48000).tobytes(), n)
    decoded = OpusDecoder(RATE).decode(packet)
    assert packet_samples(packet, RATE) == len(decoded) == int(16 * frame_ms)
    assert packet_samples(packet, 48000) == n


# -- loss: concealment and FEC ------------------------------------------------------------------


@pytest.mark.parametrize("samples", [40, 160, 320, 640, 1920])
def test_conceal_returns_the_requested_length(samples: int) -> None:
    enc, dec = _encoder(), OpusDecoder(RATE)
    for pcm in _frames(_sine(3200), 320):
        dec.decode(enc.encode(pcm))
    out = dec.conceal(samples)
    assert out.dtype == np.int16
    assert len(out) == samples
    assert np.any(out != 0)  # it continues the tone, not silence


def test_conceal_before_any_packet_is_silence_of_the_requested_length() -> None:
    out = OpusDecoder(RATE).conceal(320)
    assert len(out) == 320
    assert not np.any(out)


@pytest.mark.parametrize("frame_ms", [10, 20])
def test_recover_from_fec_packets_returns_the_requested_length(
    speech: npt.NDArray[np.int16], frame_ms: int
) -> None:
    enc = _encoder(frame_ms, fec=True, expected_loss_pct=20, bitrate_bps=24000)
    frame = enc.frame_samples
    packets = [enc.encode(pcm) for pcm in _frames(speech[:RATE], frame)]
    dec = OpusDecoder(RATE)
    for i, packet in enumerate(packets[:-1]):
        lost = i % 5 == 4  # then rebuild packet i from the FEC data in packet i+1
        out = dec.recover(packets[i + 1], frame) if lost else dec.decode(packet)
        assert len(out) == frame


def test_fec_recovers_lost_speech_better_than_concealment(speech: npt.NDArray[np.int16]) -> None:
    enc = _encoder(fec=True, expected_loss_pct=30, bitrate_bps=24000)
    packets = [enc.encode(pcm) for pcm in _frames(speech, 320)]
    lost = set(range(7, len(packets) - 1, 7))

    def play(with_fec: bool) -> npt.NDArray[np.float64]:
        dec, out = OpusDecoder(RATE), []
        for i, packet in enumerate(packets):
            if i not in lost:
                out.append(dec.decode(packet))
            elif with_fec:
                out.append(dec.recover(packets[i + 1], 320))
            else:
                out.append(dec.conceal(320))
        return np.concatenate(out).astype(np.float64)

    clean = OpusDecoder(RATE)
    reference = np.concatenate([clean.decode(p) for p in packets]).astype(np.float64)
    mask = np.zeros(len(reference), dtype=bool)
    for i in lost:
        mask[i * 320:(i + 1) * 320] = True
    fec_error = np.sum((play(True) - reference)[mask] ** 2)
    plc_error = np.sum((play(False) - reference)[mask] ** 2)
    assert fec_error < 0.5 * plc_error


def test_recover_without_a_usable_next_packet_conceals() -> None:
    dec = OpusDecoder(RATE)
    assert len(dec.recover(b"", 320)) == 320
    assert len(dec.recover(b"\xff" * 7, 320)) == 320  # undecodable next packet: plain PLC


# -- errors are CodecError, raised from libopus's --------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"\xff" * 7, bytes([31 << 3 | 3, 0]), bytes([31 << 3 | 3]), bytes([31 << 3 | 3, 7]) + bytes(20)],
    ids=["garbage", "code-3-zero-frames", "code-3-no-count", "code-3-too-long"],
)
def test_undecodable_payload_raises_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError) as info:
        OpusDecoder(RATE).decode(payload)
    assert isinstance(info.value.__cause__, opuslib_next.OpusError)
    assert not isinstance(info.value, opuslib_next.OpusError)


def test_decoder_survives_an_undecodable_payload() -> None:
    enc, dec = _encoder(), OpusDecoder(RATE)
    with pytest.raises(CodecError):
        dec.decode(b"\xff" * 7)
    assert len(dec.decode(enc.encode(_sine(320)))) == 320


@pytest.mark.parametrize(("frame_ms", "samples"), [(20, 319), (20, 321), (20, 160), (20, 0), (10, 320)])
def test_encoding_the_wrong_frame_length_raises_codec_error(frame_ms: int, samples: int) -> None:
    with pytest.raises(CodecError, match=str(RATE * frame_ms // 1000)):
        _encoder(frame_ms).encode(_sine(samples))


@pytest.mark.parametrize(
    "settings",
    [{"complexity": 11}, {"bitrate_bps": 0}, {"expected_loss_pct": 101}],
    ids=["complexity", "bitrate", "loss"],
)
def test_invalid_encoder_settings_raise_codec_error(settings: dict[str, Any]) -> None:
    with pytest.raises(CodecError) as info:
        _encoder(**settings)
    assert isinstance(info.value.__cause__, opuslib_next.OpusError)


def test_invalid_rates_raise_codec_error() -> None:
    with pytest.raises(CodecError):
        OpusEncoder(12345, 20, 32000, 5, False, 0, False)
    with pytest.raises(CodecError):
        OpusDecoder(12345)


@pytest.mark.parametrize("samples", [7, 100])  # not a multiple of 2.5 ms
def test_concealing_an_impossible_length_raises_codec_error(samples: int) -> None:
    with pytest.raises(CodecError) as info:
        OpusDecoder(RATE).conceal(samples)
    assert isinstance(info.value.__cause__, opuslib_next.OpusError)


# -- fidelity -----------------------------------------------------------------------------------


def _round_trip(signal: npt.NDArray[np.int16], frame_ms: int, bitrate_bps: int) -> npt.NDArray[np.int16]:
    enc, dec = _encoder(frame_ms, bitrate_bps=bitrate_bps), OpusDecoder(RATE)
    return np.concatenate([dec.decode(enc.encode(f)) for f in _frames(signal, enc.frame_samples)])


def _aligned_correlation(
    original: npt.NDArray[np.int16], decoded: npt.NDArray[np.int16]
) -> tuple[float, int]:
    """Best correlation over codec delays of 0-25 ms, and that delay in samples."""
    x = original[: len(decoded)].astype(np.float64)
    y = decoded.astype(np.float64)
    best = (-1.0, 0)
    for lag in range(0, 25 * RATE // 1000):
        c = float(np.corrcoef(x[: len(y) - lag], y[lag:])[0, 1])
        best = max(best, (c, lag))
    return best


@pytest.mark.parametrize(("frame_ms", "bitrate_bps"), [(20, 32000), (10, 32000), (20, 12000)])
def test_speech_survives_a_round_trip(speech: npt.NDArray[np.int16], frame_ms: int, bitrate_bps: int) -> None:
    decoded = _round_trip(speech, frame_ms, bitrate_bps)
    assert len(decoded) == len(speech) // (RATE * frame_ms // 1000) * (RATE * frame_ms // 1000)
    correlation, lag = _aligned_correlation(speech, decoded)
    assert correlation > 0.85
    assert 0 < lag < 20 * RATE // 1000  # Opus's algorithmic delay, a few ms


def test_sine_survives_a_round_trip() -> None:
    decoded = _round_trip(_sine(RATE, hz=500), 20, 32000)
    correlation, _ = _aligned_correlation(_sine(RATE, hz=500), decoded)
    assert correlation > 0.95
