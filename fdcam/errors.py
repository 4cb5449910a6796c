"""The one exception type that `fdcam` raises for bad input.

Every message is a single line that names the offending thing and what was expected, so
the command line can print it as is instead of a traceback.
"""


class FdcamError(ValueError):
    """Bad input to `fdcam`: the message names the thing and what was expected."""
