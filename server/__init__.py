"""spatialjam: server."""
