"""The one error type of the HRTF package."""


class HrtfError(ValueError):
    """An HRTF set could not be loaded or is unusable.

    The message names the input and what is wrong with it, in words a person can act on; it is
    what the CLI prints on its one line and what the server sends back for a refused upload.
    """
