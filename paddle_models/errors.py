"""Errors that are the user's to fix: a bad config, a missing file, a bad value.

Command-line tools print them as one line on stderr and exit with status 2, without a traceback
(``paddle_models.core.cli.main_wrapper``, which tells them apart by type).
"""


class UserError(Exception):
    """A problem with the user's input (file, key or value). ``str(err)`` is the one-line message."""



def error_line(text, which='last', default='no output', skip=()):
    """The informative line of an error message or of a child process's stderr: its ``which`` ('first' or
    'last') non-blank line, stripped, skipping lines that start with one of ``skip``; ``default`` where none is left.
    Paddle's C++ errors put the reason last (after a stack summary), our tools print ``error: ...`` last,
    torch's and Python's errors put it first: each caller says which it reads."""
    lines = [line.strip() for line in str(text if text is not None else '').splitlines()]
    lines = [line for line in lines if line and not (skip and line.startswith(tuple(skip)))]
    if not lines:
        return default
    return lines[0] if which == 'first' else lines[-1]
