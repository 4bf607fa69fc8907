"""The ``spatialjam`` command and its subcommands: one module each (``serve`` lives with the
server it starts, in :mod:`server.web.app`; benches register their own options from ``bench/``)."""

from server.cli.main import main

__all__ = ["main"]
