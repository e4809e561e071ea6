"""Errors that are the user's to fix: a bad config, a missing file, a bad value.

Command-line tools print them as one line on stderr and exit with status 2, without a traceback
(``paddle_models.core.cli.main_wrapper``, which tells them apart by type).
"""


class UserError(Exception):
    """A problem with the user's input (file, key or value). ``str(err)`` is the one-line message."""

