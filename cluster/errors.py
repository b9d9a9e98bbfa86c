"""Errors meant for the person running rayfit: one clear line, no traceback."""


class UserError(Exception):
    """A problem the user can fix (bad input, unreachable cluster, a plan that does not fit); the message says how."""

    exit_code = 1
