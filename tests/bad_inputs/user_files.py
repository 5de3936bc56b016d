"""What the output tests share: a user's files planted before a tool runs and compared byte for byte
afterwards, the shape of a refusal (one line, no traceback), a tool run as a process, and a model
loader that must not be reached."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from utils.output_dir import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[2]


class UserFiles:
    """Files (and folders of files) a user made, remembered byte for byte."""

    def __init__(self) -> None:
        self.contents: dict[Path, bytes] = {}

    def add(self, path: Path, data: bytes | None = None) -> Path:
        """Write a file of the user's (distinct bytes by default) and remember it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if data is not None else f"the user's {path.name}\n".encode())
        self.contents[path] = path.read_bytes()
        return path

    def keep(self, root: Path) -> None:
        """Remember every file under ``root`` (an input the tool must leave alone)."""
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in paths:
            self.contents[path] = path.read_bytes()

    def assert_untouched(self) -> None:
        for path, data in self.contents.items():
            assert path.is_file() and not path.is_symlink(), f"{path} is gone"
            assert path.read_bytes() == data, f"{path} was changed"


def assert_one_line(text: str, *expected: str) -> str:
    """The message of a refusal: exactly one line, holding every ``expected`` piece."""
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    for piece in expected:
        assert piece in lines[0], lines[0]
    return lines[0]


def tool_lines(stderr: str, prefix: str) -> str:
    """The lines a tool printed itself (a library may log a notice of its own on import, e.g.
    bitsandbytes on a CPU with AVX-512 bf16), after checking that nothing raised."""
    assert "Traceback" not in stderr, stderr
    return "\n".join(line for line in stderr.splitlines() if line.startswith(prefix))


def assert_process_refuses(
    command: list[str], prefix: str, *expected: str
) -> subprocess.CompletedProcess:
    """``python COMMAND`` (a script and its flags, or ``-m`` and a module) run in the repository
    exits with status 2 and one line of its own (starting with ``prefix``) holding every
    ``expected`` piece, no traceback; returns the finished process."""
    result = subprocess.run(
        [sys.executable, *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert_one_line(tool_lines(result.stderr, prefix), *expected)
    return result


def forbid_model_load(monkeypatch: pytest.MonkeyPatch, module: ModuleType, loader: str) -> None:
    """``module.loader`` fails the test when called: what is checked must be checked before the
    model loads."""

    def no_model_load(*args, **kwargs):
        raise AssertionError("the inputs and outputs are checked before the model loads")

    monkeypatch.setattr(module, loader, no_model_load)


def hidden_leftovers(folder: Path) -> list[str]:
    """Hidden entries a tool may have left beside its output (staging folders, temporaries)."""
    return sorted(
        p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != MANIFEST_NAME
    )


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` made read-only. Root ignores permissions, so under root creating anything in it
    fails the way it would for a user (PermissionError at the mkdir), by an injected fault."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    real_mkdir = Path.mkdir

    def mkdir(path: Path, *args, **kwargs) -> None:
        if not path.exists() and folder in Path(os.path.abspath(path)).parents:
            raise PermissionError(13, "Permission denied", str(path))
        real_mkdir(path, *args, **kwargs)

    try:
        with pytest.MonkeyPatch.context() as patch:
            if os.geteuid() == 0:
                patch.setattr(Path, "mkdir", mkdir)
            yield folder
    finally:
        folder.chmod(0o755)
