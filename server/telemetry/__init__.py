"""spatialjam server: telemetry."""
