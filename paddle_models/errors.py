"""Errors that are the user's to fix: a bad config, a missing file, a bad value.

Command-line tools print them as one line on stderr and exit with status 2, without a traceback.
"""
import numpy as np


class UserError(Exception):
    """A problem with the user's input (file, key or value). ``str(err)`` is the one-line message."""


def positive_ints(owner, name, values, length=4):
    """``values`` as a list of ``length`` python ints, each >= 1 (numpy integers accepted; booleans not), else a
    UserError "<owner>: <name> must be a list of <length> positive integers, got <values>"."""
    if not isinstance(values, (list, tuple)) or len(values) != length or \
            any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
        raise UserError(f"{owner}: {name} must be a list of {length} positive integers, got {values!r}")
    return [int(v) for v in values]
