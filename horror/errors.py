"""The one error the app shows a person: their own mistake, in words they can act on.

`UserError` is a ValueError, so callers that catch bad values keep working; the app shows its
message as it is. Anything else that goes wrong is ours: it is logged and answered with an apology.
"""

from __future__ import annotations


class UserError(ValueError):
    """A request the person can fix: bad text, a setting out of range, too many requests."""


class GenerationError(UserError):
    """The model could not produce what was asked (e.g. no sentence after several tries)."""
