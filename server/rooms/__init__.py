"""spatialjam server: rooms."""
