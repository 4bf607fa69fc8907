"""spatialjam: signaling."""
