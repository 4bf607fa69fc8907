"""spatialjam server: routing."""
