"""spatialjam server: web."""
