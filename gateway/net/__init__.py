"""Voice on the wire: RTP packets and the UDP transport."""
