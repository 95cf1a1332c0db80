"""The one exception type a user can hit; the CLI prints it as one line and exits non-zero."""


class RestoreError(Exception):
    """A problem with the user's input, model, data or configuration (never a bug)."""
