"""The one exception type for user mistakes.

The CLI turns any `UserError` into one line on stderr and exit status 2;
everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad spec, bad path, bad URL, bad argument."""


class SpecError(UserError):
    """A study spec that cannot be used; the message names the file and key."""
