"""Voice gateway appliance: group voice between boxes over RTP/Opus, controlled over MQTT."""

__version__ = "0.1.0"
