"""One exception type for every user-facing error: the CLI prints it on one line, exit 2.

It lives in `steering` (the bottom of the package graph) so that every package can raise it.
"""


class RadsteerError(Exception):
    """A problem with the user's input (protocol, files, weights) that they can fix.

    The message must say what is wrong and where (file, field, line) and, where it helps,
    what to do about it.
    """


class RadsteerWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it on one line)."""
