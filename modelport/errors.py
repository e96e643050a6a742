"""The one error type users see: its message is printed as a single line, without a traceback."""


class ModelportError(Exception):
    """A problem with the user's input or environment, explained in one line."""
