"""User-facing failures of the ``spatialjam`` command."""


class CliError(Exception):
    """A failure the user can act on; the message is printed as is, on one line."""
