"""spatialjam server: tick."""
