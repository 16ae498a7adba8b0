"""Audio devices (ALSA, WAV stand-in) and the one crossing from their threads into asyncio."""
