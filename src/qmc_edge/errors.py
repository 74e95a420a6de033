"""The one exception type that the CLI turns into a single clear line (no traceback)."""


class QMCError(Exception):
    """Bad input or environment: the message names the problem and the fix."""
