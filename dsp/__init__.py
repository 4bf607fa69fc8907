"""spatialjam: dsp."""
