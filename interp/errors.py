"""The one exception type for user errors: the CLI prints its message on one line, no traceback."""


class InterpError(Exception):
    """A user error (bad spec, mismatched pair, corrupt file...): the message names the bad
    value and what was expected."""
