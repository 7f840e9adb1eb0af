"""The one error type for bad user input: the CLI prints its message on one line, no traceback."""


class UserError(Exception):
    """Bad input from the user (a name, a size, a path, a file): the message says what to do."""
