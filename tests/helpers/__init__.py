"""What several test modules share and that is not a fixture: signal measurements, live-server
helpers, the browser launch settings, hand-made SOFA files. Test modules import from here, never
from one another; fixtures live in the conftest.py files (tests/ for all, a tier's for its own).
"""
