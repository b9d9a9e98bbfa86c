"""Errors meant for the person running rayfit: one clear message, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad input, unreachable cluster, a plan that does not fit); the message says how."""

    exit_code = 1

    def cli_message(self) -> str:
        """What a command line prints for this error."""
        return f"rayfit: {self}"


def run_main(body: Callable[[], int | None]) -> int:
    """Run an entrypoint's body: a UserError prints its message alone (no traceback) and gives its exit code.

    Known-harmless third-party noise is silenced first (cluster.noise), so a user reads rayfit's own lines.
    """
    import warnings

    from cluster.noise import quiet
    from cluster.spec.base import SpecDeprecation

    quiet()
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SpecDeprecation):  # a user's spelling, not a code location: one plain line
            print(f"rayfit: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        return body() or 0
    except UserError as e:
        print(e.cli_message(), file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        warnings.showwarning = shown
