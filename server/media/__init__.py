"""spatialjam server: media."""
