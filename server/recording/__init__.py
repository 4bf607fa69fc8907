"""spatialjam server: recording."""
