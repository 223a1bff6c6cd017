"""The errors a stage shows its user as one message, and how a stage's main is run."""

from __future__ import annotations

from stages.core.io import UserError


class ConfigError(UserError, ValueError):
    """Raised once per stage with every problem found in its params."""


class StageError(UserError, RuntimeError):
    """A stage cannot go on for a reason the user can fix (the message says how)."""


def run_stage(main, *args) -> None:
    """Run a stage's main from the command line: a `UserError` (bad config, bad input, a missing
    file, no sandbox) ends it with the message alone and exit status 1; anything else (a plain
    ValueError from zip(strict=True), say) is a bug and keeps its traceback."""
    import sys

    try:
        main(*args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
