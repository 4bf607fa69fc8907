"""spatialjam: ai_accompany."""
