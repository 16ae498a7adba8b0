"""One port's voice path: uplink (capture -> wire) and downlink (wire -> playback)."""
