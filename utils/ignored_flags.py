"""Flags kept only so that the original project's command lines still run.

Such a flag is accepted, its help says it is ignored, and a value other than its default is
answered with one line on stderr, so that nobody believes it did something.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

IGNORED_HELP = "ignored; kept for the original's command lines"


def flags_off_default(config: Any, names: Iterable[str]) -> list[str]:
    """``--name`` for each field of the settings dataclass ``config`` in ``names`` whose value
    is not the field's default."""
    defaults = {field.name: field.default for field in fields(config)}
    return [f"--{name}" for name in names if getattr(config, name) != defaults[name]]


def ignored_flag_notes(flags: Iterable[str], program: str) -> list[str]:
    """The note of each ignored flag that was set to another value than its default."""
    return [f"{program} note: {flag} is {IGNORED_HELP}" for flag in flags]


def announce_ignored_flags(flags: Iterable[str], program: str) -> None:
    """One line on stderr for each flag in ``flags`` (those set to another value)."""
    for note in ignored_flag_notes(flags, program):
        print(note, file=sys.stderr)
