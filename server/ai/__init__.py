"""spatialjam server: ai."""
