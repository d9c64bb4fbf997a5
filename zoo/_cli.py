"""What every zoo command shares on the way in and out: user mistakes become
one line on stderr and a non-zero exit, output paths are checked before any
long work, and absl runs ``main``.

``NONLOCAL_TF_TRACEBACK=1`` shows the full traceback instead (for bug reports).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import app


class UserError(Exception):
    """A mistake in the command line or its inputs, shown as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe the user's input rather than a bug here: bad
    values and files (``ValueError``: checkpoints, hashes, conversions,
    annotations, shapes; ``OSError``: missing or unwritable paths) and
    downloads that failed."""
    from nonlocal_tf.weights.download import DownloadError

    return (UserError, ValueError, OSError, DownloadError)


def run(main: Callable[[list[str]], int | None]) -> None:
    """``app.run(main)``, with usage and user errors reported as one line,
    ``zoo.<command>: error: ...``, and exit status 1."""

    def guarded(argv):
        try:
            return main(argv)
        except (app.UsageError, *_user_errors()) as exc:
            if os.environ.get("NONLOCAL_TF_TRACEBACK"):
                raise
            command = os.path.basename(sys.argv[0]).removesuffix(".py")
            message = " ".join(str(exc).split()) or type(exc).__name__
            hint = " (--help lists the flags)" if isinstance(exc, app.UsageError) else ""
            print(f"zoo.{command}: error: {message}{hint}", file=sys.stderr)
            return 1

    app.run(guarded)


def output_dir(path: str, flag: str = "--output_dir") -> str:
    """``path`` created and writable, or a `UserError` naming ``flag``."""
    from nonlocal_tf import files

    try:
        return files.check_writable_dir(path, f"{flag} folder")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def output_file(path: str, flag: str = "--output") -> str:
    """``path`` can be written (its folder created), or a `UserError` naming ``flag``."""
    from nonlocal_tf import files

    try:
        return files.check_writable_file(path, f"{flag} file")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def int_pair(values: list[str], flag: str) -> tuple[int, int]:
    """Two integers from an absl list flag, e.g. ``--train_scale=256,320``."""
    try:
        pair = tuple(int(v) for v in values)
    except ValueError:
        pair = ()
    if len(pair) != 2:
        raise app.UsageError(f"{flag} takes two integers, e.g. {flag}=256,320. Received: {values}")
    return pair
