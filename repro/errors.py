"""The one exception type that reaches the user as a one-line message and exit code 2."""

import errno


class ReproError(Exception):
    """Bad input or environment: the message names the problem and the fix.

    The CLI prints it as a single line and exits with code 2, without a traceback.
    Anything else that escapes is a bug and keeps its traceback.
    """

    exit_code = 2


LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: str) -> str:
    """A refusal stays one line whatever it quotes (a name with a newline in it): the
    characters that break a line are written as their escapes."""
    return message.translate(LINE_BREAKS)


SHAPE_ERRNOS = {errno.ENOTDIR: "a file where a folder belongs",
                errno.EISDIR: "a folder where a file belongs",
                errno.ELOOP: "a loop of symbolic links",
                errno.ENAMETOOLONG: "a name too long for the file system",
                errno.EACCES: "not accessible (permission denied)"}
"""File-system errors that mean a path is not what it should be: bad input. The preflight
refuses these for every path a run writes; `from_os_error` turns any left to a reader into
one line."""


def from_os_error(exc: OSError) -> ReproError | None:
    """The ReproError for a file-system error that is bad input, or None for any other."""
    if exc.errno not in SHAPE_ERRNOS:
        return None
    return ReproError(f"{exc.filename or 'a path'} is {SHAPE_ERRNOS[exc.errno]}; fix or move "
                      "it, then run the same command again")
