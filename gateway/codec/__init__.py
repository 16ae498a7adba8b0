"""Opus through libopus, and the per-sender jitter buffer."""
