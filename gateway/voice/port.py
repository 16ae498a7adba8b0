"""A port: one local audio endpoint with its device, uplink, downlink and talk gate.

Each captured device frame drives one tick, in data-flow order: run the uplink chain (resample to
16 kHz, high-pass, noise suppression, voice activity, AGC, limiter) and hand the result to the uplink
(which sends while the talk gate is open); pull the same duration of mixed downlink audio, resample
it to the device rate and queue it for playback. Playback therefore runs on the device's own clock
and never waits for the network.

A stalled loop (a busy machine) leaves a backlog of captured frames; their ticks come in a burst and
each queues a frame of playback, so the device would be left with that much audio queued for good:
the delay after every stall, added up to ``playback_buffer_ms``. So the port watches the lowest depth
of its playback queue over :data:`STANDING_TICKS` ticks: a whole tick or more that never drained is
standing delay, and that many ticks skip the downlink (counted in ``playback_catch_ups``). The audio
they would have taken stays in the jitter buffers, which see it as delay above their target and
drain it as they drain any: frames dropped in pauses.

Talk modes: ``ptt`` opens the gate while the button is held, ``open`` keeps it open, and ``vad``
(hands-free) opens it while the voice detector hears speech and holds it ``vad_hold_ms`` through
pauses (its button, if it has one, forces it open while held). A hands-free port keeps
``vad_preroll_ms`` of audio in a delay line while its gate is shut, so a transmission starts with
the syllable that opened it; the audio leaving the line feeds the uplink, which keeps the RTP clock
on audio time.

The floor: when a :class:`FloorGate` is attached, opening the gate first asks it for the floor of
the talk group. A refused press keeps the gate shut; a granted one may still be stopped later (a
higher priority or an emergency broke in, or the time-out). Either way the port stays shut until the
user lets go: the button released (``ptt``), the speech over (``vad``), or the group free again
(``open``). The tones that explain it (:mod:`gateway.voice.cues`) are mixed into what the port plays.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from gateway.audio.bridge import CaptureBridge, Frame, PlaybackQueue
from gateway.audio.device import AudioDevice
from gateway.config import PROCESSING_RATE_HZ, CodecSettings, NetworkSettings, PortSettings
from gateway.dsp.chain import UplinkChain
from gateway.dsp.resample import Resampler
from gateway.dsp.vad import PreRoll
from gateway.net.rtp import RtpPacket
from gateway.voice.cues import CuePlayer
from gateway.voice.downlink import Downlink
from gateway.voice.uplink import Uplink

#: Ticks over which the playback queue's lowest depth is taken (0.5 s of 20 ms ticks). A steady
#: stream leaves less than a tick queued at some tick of any such window; a stall's burst leaves more.
STANDING_TICKS = 25


class FloorGate(Protocol):
    """Who grants a port the floor of its talk group (the box's floors, :mod:`gateway.voice.floors`)."""

    def request(self, port: Port) -> bool:
        """The port wants to talk now; True when granted (the port's uplink claim is set)."""

    def release(self, port: Port) -> None:
        """The port stopped talking by itself."""


def port_ssrc(site: str, gateway_id: str, port: str) -> int:
    """A stable SSRC for a sending port, so a listener can tell which port is talking."""
    digest = hashlib.blake2b(f"{site}/{gateway_id}/{port}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


class Port:
    """One audio endpoint of the box and its voice path."""

    def __init__(
        self,
        settings: PortSettings,
        codec: CodecSettings,
        network: NetworkSettings,
        device: AudioDevice,
        ssrc: int,
        send: Callable[[str, bytes], None],
        initial_sequence: int = 0,
        initial_timestamp: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.device = device
        self.ssrc = ssrc
        self.talk_group = settings.talk_group or (settings.groups[0] if settings.groups else "")
        self._send = send
        self.uplink = Uplink(
            codec, ssrc, self._send_packet, initial_sequence, initial_timestamp
        )
        self.downlink = Downlink(settings.groups, network.jitter_min_ms,
                                 max_delay_ms=network.jitter_max_ms, clock=clock)
        self.chain = UplinkChain(settings.dsp, device.rate_hz, block_ms=codec.frame_ms)
        dsp = settings.dsp
        self.preroll = PreRoll(PROCESSING_RATE_HZ * dsp.vad_preroll_ms // 1000)
        # Ticks (one per device frame) the hands-free gate stays open after the last speech.
        self._hold_ticks = dsp.vad_hold_ms * device.rate_hz // (1000 * device.frame_samples)
        self._hold_left = 0
        self._to_device = Resampler(PROCESSING_RATE_HZ, device.rate_hz)
        self._tick_16k = PROCESSING_RATE_HZ * device.frame_samples // device.rate_hz
        self.playback = PlaybackQueue(device.rate_hz * settings.playback_buffer_ms // 1000)
        self._depths: collections.deque[int] = collections.deque(maxlen=STANDING_TICKS)
        self._catch_up = 0
        self.playback_catch_ups = 0
        """Ticks that skipped the downlink to shed playback audio left queued by a stall."""
        self.ptt_pressed = False
        self.priority = settings.priority
        self.emergency = False
        """The next transmission is an emergency call (set by the emergency button or command)."""
        self.floor: FloorGate | None = None
        self.blocked = False
        """Refused or stopped by the floor: the gate stays shut until the user lets go."""
        self.cues = CuePlayer()
        self.volume_db = 0.0
        """Playback volume (dB, -40 to +12) of what the port hears; cues are not affected."""
        self._volume = 1.0
        self.on_change: Callable[[Port], None] | None = None
        """Called on the loop when ``transmitting`` or ``receiving`` changes (LEDs, MQTT)."""
        self.capture: CaptureBridge | None = None
        self._receiving = False

    @property
    def transmitting(self) -> bool:
        """True while this port's talk gate is open."""
        return self.uplink.transmitting

    @property
    def receiving(self) -> bool:
        """True while this port plays audio from someone."""
        return self._receiving

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the device; from now on every captured frame is one tick."""
        self.capture = CaptureBridge(loop, self.tick)
        if self.settings.talk_mode == "open":
            self._set_gate(True)
        self.device.start(self.capture, self.playback)

    def stop(self) -> None:
        """Stop the device."""
        self.device.stop()

    def set_ptt(self, pressed: bool) -> None:
        """Push-to-talk pressed or released (from a button, the console or a script). A latching
        port toggles on each press and ignores releases."""
        if self.settings.ptt_latching and self.settings.talk_mode == "ptt":
            if not pressed:
                return
            pressed = not self.ptt_pressed
        self.ptt_pressed = pressed
        if self.settings.talk_mode == "ptt" and not self.emergency:
            if not pressed:
                self.blocked = False
            self._set_gate(pressed)

    def set_emergency(self, on: bool) -> None:
        """Start or end an emergency call: the port transmits (whatever its talk mode, with no
        button held) as an emergency, which takes the floor from anyone; ending it goes back to
        the talk mode's normal behaviour."""
        if on == self.emergency:
            return
        self.emergency = on
        self.blocked = False
        if self.uplink.transmitting:  # end the current spurt: the next claim is a new one
            self._set_gate(False)
        if on or self.settings.talk_mode == "open" or (
                self.settings.talk_mode == "ptt" and self.ptt_pressed):
            self._set_gate(True)

    def select_group(self, group: str) -> None:
        """Talk on ``group`` (one of the port's groups) from now on; a transmission in progress
        ends first. The wearer hears which: as many beeps as the group's place in the list."""
        if group not in self.settings.groups:
            have = ", ".join(self.settings.groups)
            raise ValueError(f"port {self.name} has no group {group!r} (has: {have})")
        if group != self.talk_group:
            resume = self.uplink.transmitting
            if resume:
                self._set_gate(False)
            self.talk_group = group
            self.blocked = False
            if resume or self.settings.talk_mode == "open":
                self._set_gate(True)
            self._changed()
        self.cues.play("group", self.settings.groups.index(group) + 1)

    def set_volume(self, volume_db: float) -> None:
        """Playback volume of what the port hears, in dB (-40 to +12)."""
        if not -40.0 <= volume_db <= 12.0:
            raise ValueError(f"volume must be -40 to +12 dB, got {volume_db}")
        self.volume_db = float(volume_db)
        self._volume = 10 ** (volume_db / 20)
        self._changed()

    def stop_talking(self) -> None:
        """The floor took the port off the air (preempted or timed out): close the gate, with the
        end flag, and stay shut until the user lets go."""
        self._refused()
        self.emergency = False
        if self.uplink.transmitting:
            self.uplink.set_gate(False)
            self._changed()

    def _refused(self) -> None:
        """Off the air by the floor's decision: shut until the user lets go. A latching button is
        let go for them (the next press asks again), so it never waits latched for a free group."""
        if self.settings.ptt_latching and self.settings.talk_mode == "ptt":
            self.ptt_pressed = False
        else:
            self.blocked = True

    def floor_free(self) -> None:
        """The talk group has nobody talking: an ``open`` port that was stopped tries again."""
        if self.settings.talk_mode == "open" and self.blocked:
            self.blocked = False
            self._set_gate(True)

    def _set_gate(self, open_: bool) -> bool:
        """Open or close the talk gate (opening asks the floor); True if it is now as asked."""
        if open_ == self.uplink.transmitting:
            return True
        if open_:
            if self.blocked:
                return False
            if self.floor is not None and not self.floor.request(self):
                self._refused()
                return False
        self.uplink.set_gate(open_)
        if not open_ and self.floor is not None:
            self.floor.release(self)
        self._changed()
        return True

    def receive(self, group: str, packet: RtpPacket) -> None:
        """A voice packet from another sender in one of the groups (this port filters its own)."""
        if packet.ssrc != self.ssrc:
            self.downlink.receive(group, packet)

    def tick(self, frame: Frame) -> None:
        """One captured device frame: run the uplink, then queue one frame of playback."""
        audio = self.chain.process(frame)
        if self.settings.talk_mode == "vad":
            self._hands_free(audio)
        else:
            self.uplink.process(audio)
        if self._standing_delay():
            return
        heard = self.downlink.pull(self._tick_16k)
        if self._volume != 1.0:
            heard = np.clip(heard * self._volume, -32768, 32767).astype(np.int16)
        heard = self.cues.mix_into(heard)
        self.playback.write(self._to_device.process(heard))
        if self.downlink.receiving != self._receiving:
            self._receiving = self.downlink.receiving
            self._changed()

    def _standing_delay(self) -> bool:
        """True if this tick sheds a tick of playback left queued by a stall (see the docstring)."""
        tick = self.device.frame_samples
        self._depths.append(self.playback.queued)
        if not self._catch_up and len(self._depths) == STANDING_TICKS:
            self._catch_up = min(self._depths) // tick
            if self._catch_up:
                self._depths.clear()
        if not self._catch_up:
            return False
        self._catch_up -= 1
        self.playback_catch_ups += 1
        return True

    def _hands_free(self, audio: Frame) -> None:
        """Open the gate on speech (pre-roll first), hold it through pauses, then close it. A held
        push-to-talk button keeps it open whatever the detector says (an override for a noisy
        moment or a quiet talker)."""
        if self.emergency:
            pass  # an emergency call keeps the gate open (hot mic) until it ends
        elif self.chain.block_speech or self.ptt_pressed:
            self._hold_left = self._hold_ticks
            if not self.uplink.transmitting and not self.blocked and self._set_gate(True):
                self.uplink.process(self.preroll.drain())
        elif self._hold_left > 0:
            self._hold_left -= 1
        else:
            self.blocked = False  # the speech that was refused or stopped is over
            if self.uplink.transmitting:
                self._set_gate(False)
        if self.uplink.transmitting:
            self.uplink.process(audio)
        else:
            self.uplink.process(self.preroll.push(audio))

    def _send_packet(self, datagram: bytes) -> None:
        self._send(self.talk_group, datagram)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)
