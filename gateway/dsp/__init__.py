"""Pure signal-processing stages (arrays in, arrays out, state in objects)."""
