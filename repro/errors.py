"""The one exception type that reaches the user as a one-line message and exit code 2."""


class ReproError(Exception):
    """Bad input or environment: the message names the problem and the fix.

    The CLI prints it as a single line and exits with code 2, without a traceback.
    Anything else that escapes is a bug and keeps its traceback.
    """

    exit_code = 2
