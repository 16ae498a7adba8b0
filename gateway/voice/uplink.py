"""Uplink of one port, in data-flow order: 16 kHz frames -> talk gate -> Opus -> RTP -> send.

The port hands in audio already resampled to 16 kHz, in chunks of any length; the uplink cuts it
into codec frames. While the gate is closed nothing is sent, but the RTP clock keeps running so a
receiver sees the silence as time, and the next talk spurt starts with the marker bit set.

Every packet of a spurt carries the port's floor claim (:attr:`Uplink.claim`, set by whoever granted
the floor). Closing the gate sends the next :data:`END_PACKETS` frames as silence whose claim has
the end flag, at the usual cadence (a burst would look like jitter to the listeners' buffers), so
every box frees the floor within a frame instead of waiting for the claim to time out; several,
because multicast is lossy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.audio.bridge import Frame
from gateway.codec.opus import DTX_SILENCE_MAX_BYTES, OpusEncoder
from gateway.config import PROCESSING_RATE_HZ, CodecSettings
from gateway.net.rtp import RTP_CLOCK_HZ, RtpSender

END_PACKETS = 3
"""Packets with the end flag sent when a spurt ends (each one frame of silence)."""


class Uplink:
    """Encodes and packetises what a port captures while its talk gate is open."""

    def __init__(
        self,
        codec: CodecSettings,
        ssrc: int,
        send: Callable[[bytes], None],
        initial_sequence: int = 0,
        initial_timestamp: int = 0,
    ) -> None:
        self.encoder = OpusEncoder(
            PROCESSING_RATE_HZ, codec.frame_ms, codec.bitrate_bps, codec.complexity,
            codec.fec, codec.expected_loss_pct, codec.dtx,
        )
        self.rtp = RtpSender(ssrc, codec.payload_type, initial_sequence, initial_timestamp)
        self._send = send
        self._frame = self.encoder.frame_samples
        self._rtp_step = RTP_CLOCK_HZ * codec.frame_ms // 1000
        self._fifo = np.zeros(self._frame * 4, dtype=np.int16)
        self._fill = 0
        self._open = False
        self._ending = 0
        self.claim: bytes | None = None
        """The floor claim element each packet carries while the gate is open (None: no floor)."""
        self.end_claim: bytes | None = None
        """The same claim with the end flag, for the packets that close the spurt."""
        self.frames_encoded = 0
        self.frames_suppressed = 0
        """Frames DTX judged silent and that were therefore not sent."""

    @property
    def transmitting(self) -> bool:
        """True while the talk gate is open."""
        return self._open

    @property
    def busy(self) -> bool:
        """True while the gate is open or the end-flag packets of a spurt are still going out."""
        return self._open or self._ending > 0

    def set_gate(self, open_: bool) -> None:
        """Open or close the talk gate; opening starts a new talk spurt, closing ends it (with the
        end flag, when there is a claim)."""
        if open_ and not self._open:
            self.encoder.reset()
            self.rtp.start_spurt()
        elif not open_ and self._open and self.end_claim is not None:
            self._ending = END_PACKETS
        if open_:
            self._ending = 0
        self._open = open_

    def process(self, chunk: Frame) -> None:
        """Take the next 16 kHz audio; send a packet for every whole frame while the gate is open."""
        pos = 0
        while pos < len(chunk):
            take = min(len(chunk) - pos, self._frame - self._fill)
            self._fifo[self._fill: self._fill + take] = chunk[pos: pos + take]
            self._fill += take
            pos += take
            if self._fill == self._frame:
                self._fill = 0
                self._emit(self._fifo[: self._frame])

    def _emit(self, frame: Frame) -> None:
        if not self._open:
            if self._ending and self.end_claim is not None:
                self._ending -= 1
                payload = self.encoder.encode(np.zeros(self._frame, dtype=np.int16))
                self._send(self.rtp.packetize(payload, self._rtp_step, self.end_claim))
            else:
                self.rtp.skip(self._rtp_step)
            return
        payload = self.encoder.encode(frame)
        self.frames_encoded += 1
        if self.encoder.dtx and len(payload) <= DTX_SILENCE_MAX_BYTES:
            self.frames_suppressed += 1
            self.rtp.skip(self._rtp_step)
            return
        self._send(self.rtp.packetize(payload, self._rtp_step, self.claim))
