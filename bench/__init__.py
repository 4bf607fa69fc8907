"""spatialjam: bench."""
