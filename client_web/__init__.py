"""spatialjam: client_web."""
