"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class ClpeftError(Exception):
    """Bad input or a missing resource. The message names the fix."""
