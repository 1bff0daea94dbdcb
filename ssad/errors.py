"""The one exception type users see: a clear, one-line message about what is wrong.

The command line turns it into exit status 2, the app into a ``gr.Error``; anything else is a bug.
"""


class SsadError(Exception):
    """A problem with the user's input, data or weights, with a message that says what is wrong."""


class DataError(SsadError):
    """A dataset folder or an image that cannot be used."""


class WeightsError(SsadError):
    """Weights that cannot be found, read or trusted."""
