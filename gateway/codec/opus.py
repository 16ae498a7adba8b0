"""Opus encoder and decoder over libopus (opuslib-next), mono, at the box's processing rate.

libopus errors are translated into :class:`~gateway.errors.CodecError`. The decoder also conceals
lost frames (PLC) and recovers a lost frame from the next packet's in-band FEC when it has one.
"""

from __future__ import annotations

import ctypes

import numpy as np
import opuslib_next
import opuslib_next.api.decoder as opus_decoder_api

from gateway.audio.bridge import Frame
from gateway.errors import CodecError

#: Longest Opus packet duration (120 ms) at 48 kHz: decode buffers are sized for it.
MAX_FRAME_MS = 120

#: libopus: "a packet of 2 bytes or less need not be transmitted" when DTX is on
#: (https://opus-codec.org/docs/opus_api-1.3.1/group__opus__encoder.html, OPUS_SET_DTX).
DTX_SILENCE_MAX_BYTES = 2


class OpusEncoder:
    """Encodes fixed-size mono int16 frames."""

    def __init__(
        self,
        rate_hz: int,
        frame_ms: int,
        bitrate_bps: int,
        complexity: int,
        fec: bool,
        expected_loss_pct: int,
        dtx: bool,
    ) -> None:
        self.rate_hz = rate_hz
        self.frame_samples = rate_hz * frame_ms // 1000
        try:
            self._enc = opuslib_next.Encoder(rate_hz, 1, "voip")
            self._enc.bitrate = bitrate_bps
            self._enc.complexity = complexity
            self._enc.inband_fec = int(fec)
            self._enc.packet_loss_perc = expected_loss_pct
            self._enc.dtx = int(dtx)
        except opuslib_next.OpusError as exc:
            raise CodecError(f"libopus refused the encoder settings: {exc}") from exc
        self.dtx = dtx
        self.fec = fec
        self.expected_loss_pct = expected_loss_pct

    def encode(self, pcm: Frame) -> bytes:
        """One frame of ``frame_samples`` in, one Opus packet out."""
        if len(pcm) != self.frame_samples:
            raise CodecError(f"encoder needs {self.frame_samples} samples, got {len(pcm)}")
        try:
            return bytes(self._enc.encode(pcm.astype("<i2").tobytes(), self.frame_samples))
        except opuslib_next.OpusError as exc:
            raise CodecError(f"libopus failed to encode: {exc}") from exc

    def set_loss_protection(self, fec: bool, expected_loss_pct: int) -> None:
        """Turn in-band FEC on or off and set the loss hint (takes effect from the next frame)."""
        try:
            self._enc.inband_fec = int(fec)
            self._enc.packet_loss_perc = expected_loss_pct
        except opuslib_next.OpusError as exc:
            raise CodecError(f"libopus refused FEC {fec} at {expected_loss_pct}%: {exc}") from exc
        self.fec = fec
        self.expected_loss_pct = expected_loss_pct

    def reset(self) -> None:
        """Forget history (called at the start of a talk spurt)."""
        self._enc.reset_state()


class OpusDecoder:
    """Decodes one sender's packets, conceals losses and uses in-band FEC."""

    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self._max_samples = rate_hz * MAX_FRAME_MS // 1000
        try:
            self._dec = opuslib_next.Decoder(rate_hz, 1)
        except opuslib_next.OpusError as exc:
            raise CodecError(f"libopus refused the decoder settings: {exc}") from exc

    def decode(self, payload: bytes) -> Frame:
        """Decode a packet into however many samples it holds; CodecError if libopus rejects it."""
        if not payload:  # libopus would treat it as a lost packet and conceal 120 ms
            raise CodecError("empty Opus packet")
        try:
            pcm = self._dec.decode(payload, self._max_samples)
        except opuslib_next.OpusError as exc:
            raise CodecError(f"libopus rejected a packet: {exc}") from exc
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16)

    def conceal(self, samples: int) -> Frame:
        """Packet-loss concealment for ``samples`` (a multiple of 2.5 ms) of missing audio."""
        # opuslib's Decoder.decode() calls len() on its data, so PLC (a NULL packet) goes through
        # the API layer, whose ctypes c_char_p argument turns None into NULL.
        try:
            pcm = opus_decoder_api.decode(
                self._dec.decoder_state, ctypes.c_char_p(None), 0, samples, False, channels=1
            )
        except opuslib_next.OpusError as exc:
            raise CodecError(f"libopus cannot conceal {samples} samples: {exc}") from exc
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16)

    def recover(self, next_payload: bytes, samples: int) -> Frame:
        """Rebuild a lost frame from the FEC data in the packet after it (PLC if it has none)."""
        try:
            pcm = self._dec.decode(next_payload, samples, decode_fec=True)
        except opuslib_next.OpusError:
            return self.conceal(samples)
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16)

    def reset(self) -> None:
        """Forget history (a new talk spurt from this sender)."""
        self._dec.reset_state()


def packet_samples(payload: bytes, rate_hz: int) -> int:
    """Samples at ``rate_hz`` that an Opus packet decodes to (RFC 6716 section 3.1), 0 if invalid."""
    if not payload:
        return 0
    toc = payload[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame_us = (10000, 20000, 40000, 60000)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame_us = (10000, 20000)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame_us = (2500, 5000, 10000, 20000)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(payload) < 2:
            return 0
        frames = payload[1] & 0x3F
    total_us = frames * frame_us
    if frames == 0 or total_us > MAX_FRAME_MS * 1000:
        return 0
    return rate_hz * total_us // 1_000_000


def has_fec(payload: bytes) -> bool:
    """True if an Opus packet carries in-band FEC (LBRR) for the frame before it.

    libopus 1.5's ``opus_packet_has_lbrr`` in Python (the box has 1.3.1): only SILK and hybrid frames
    carry LBRR; the first SILK frame's range-coded header starts with one VAD flag per 20 ms and then
    the LBRR flag, each coded with probability 1/2, so they are plain bits at the top of the frame's
    first byte (RFC 6716 section 4.2.3). The frame is found per RFC 6716 section 3.2.
    """
    n = len(payload)
    if n < 2:
        return False
    toc = payload[0]
    config = toc >> 3
    if config >= 16:  # CELT only: no LBRR
        return False
    silk_frames = max(1, (10, 20, 40, 60)[config & 3] // 20) if config < 12 else 1
    stereo = bool(toc & 0x04)
    code = toc & 3
    offset = 1
    if code == 2:
        offset += 1 if payload[1] < 252 else 2
    elif code == 3:
        frames = payload[1] & 0x3F
        vbr, padded = payload[1] & 0x80, payload[1] & 0x40
        offset = 2
        if padded:
            while offset < n and payload[offset] == 255:
                offset += 1
            offset += 1
        if vbr:
            for _ in range(frames - 1):
                if offset >= n:
                    return False
                offset += 1 if payload[offset] < 252 else 2
    if offset >= n:
        return False
    first = payload[offset]
    lbrr = (first >> (7 - silk_frames)) & 1
    if stereo:
        lbrr |= (first >> (6 - 2 * silk_frames)) & 1
    return bool(lbrr)
