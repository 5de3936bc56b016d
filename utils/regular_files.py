"""Checking that a path a user gave is a regular file before reading it.

Opening a FIFO blocks until someone writes to it, a device can be endless, and a loop of
symbolic links fails with an error that names no file: readers of user files check first, and
say in one sentence what the path is instead.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotRegularFileError(ValueError):
    """A path that is missing, or is not a regular file; ``str()`` is one sentence naming it."""


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def check_regular_file(path: str | os.PathLike, noun: str = "file") -> os.stat_result:
    """The ``os.stat`` of ``path`` (links followed) when it is a regular file.

    Args:
        path: the path to check.
        noun: what the file should be, for the message ("image file", "annotation").

    Raises:
        NotRegularFileError: the path does not exist, is a directory, a FIFO, a socket or a
            device, is a loop of symbolic links, or cannot be looked at.
    """
    shown = repr(str(path))
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise NotRegularFileError(f"{noun.capitalize()} {shown} does not exist.") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotRegularFileError(
                f"{noun.capitalize()} {shown} is a loop of symbolic links."
            ) from None
        reason = error.strerror or type(error).__name__
        raise NotRegularFileError(f"Cannot open {noun} {shown}: {reason}.") from None
    except ValueError as error:  # an embedded NUL byte
        raise NotRegularFileError(
            f"{noun.capitalize()} path {shown} is invalid: {error}."
        ) from None
    if stat.S_ISDIR(status.st_mode):
        raise NotRegularFileError(f"{shown} is a directory, not {_article(noun)} {noun}.")
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _KINDS if test(status.st_mode)), "a special file")
        raise NotRegularFileError(
            f"{noun.capitalize()} {shown} is {kind}, not a regular file; it is not read."
        )
    return status


def is_regular_file(path: str | os.PathLike) -> bool:
    """True when ``path`` (links followed) is a regular file; never raises, never blocks."""
    try:
        return stat.S_ISREG(os.stat(Path(path)).st_mode)
    except (OSError, ValueError):
        return False
