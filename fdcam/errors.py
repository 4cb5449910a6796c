"""The one exception type that `fdcam` raises for bad input.

Every message is a single line that names the offending thing and what was expected, so
the command line can print it as is instead of a traceback. In a notebook (IPython), the
error shows as that one line too: a bad papermill parameter stops the run in the cell that
checks it with ``FdcamError: <message>``, not with a page of traceback.
"""


class FdcamError(ValueError):
    """Bad input to `fdcam`: the message names the thing and what was expected."""

    def _render_traceback_(self) -> list[str]:
        """IPython's hook for an exception's own traceback: just the one line."""
        return [f"{type(self).__name__}: {self}"]


def missing_extra(error: ModuleNotFoundError, what: str, extra: str = "evaluation") -> FdcamError:
    """The one line for a missing optional dependency: ``pip install fdcam`` brings torch and
    torchvision only; the baselines, the evaluation and the book come with extras."""
    return FdcamError(f"{what} needs the [{extra}] extra ({error.name} is not installed): "
                      f"pip install 'fdcam[{extra}]'")
