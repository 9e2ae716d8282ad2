"""Errors the lab raises; the CLI turns them into one-line messages."""

from ..errors import PiError


class LabError(PiError):
    """A lab operation failed; the message says what to do."""
