"""Output folders that never cost a user a file.

A tool that writes a folder (the merge's --save_path, predict's --output_dir, the toy dataset, the
mask renderer) goes through :class:`OutputFolder`, which

* refuses an output that is a file, that is, contains or lies inside one of the tool's inputs, or
  that holds files the tool did not write (unless ``overwrite``);
* has the tool write into a fresh hidden sibling ``.<name>.<random>`` that it creates itself, so an
  interrupted run leaves the output as it was;
* places the result by renames: the staged folder as a whole when the output is new or empty,
  file by file otherwise (a file the tool wrote before is replaced, every other file stays);
* lists the files it placed in a manifest inside the output (``.lisa_outputs``) and deletes only
  files listed there: a re-run removes what an earlier run wrote and this one does not.

``overwrite`` lets a tool write into a folder that holds files it did not write: those with the
names it writes are replaced, every other file stays as it is. Nothing is ever deleted that the
manifest does not list.

Tools that add files to a folder over time (chat.py's mask pictures) use :func:`claim_file_names`
and :func:`record_files` with the same manifest, and :func:`write_bytes_atomic` for each file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from utils.errors import UsageError

# No .json suffix: eval_mask.py reads the .json files of a ground-truth folder as annotations.
MANIFEST_NAME = ".lisa_outputs"
OVERWRITE_HELP = (
    "write into an existing folder that holds files this tool did not write: those with the "
    "names it writes are replaced, the others are left as they are"
)


class OutputDirError(UsageError):
    """An output the tool may not write; ``str(error)`` is one sentence naming the flag and path."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _unique_name(folder: Path, stem: str, suffix: str = "") -> Path:
    return folder / f".{stem}.{secrets.token_hex(4)}{suffix}"


def make_private_dir(parent: Path, name: str) -> Path:
    """A new folder ``parent/.<name>.<random>`` (mode from the umask, unlike tempfile.mkdtemp)."""
    for _ in range(100):
        candidate = _unique_name(parent, name)
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name in {parent}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file beside it and a rename (readers never see half)."""
    temporary = _unique_name(path.parent, path.name, ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=1, ensure_ascii=False) + "\n").encode())


# --- inputs -----------------------------------------------------------------------------------


def check_apart_from_inputs(
    output: str | os.PathLike,
    flag: str,
    inputs: Mapping[str, str | os.PathLike | None],
    *,
    refuse_containing: bool = True,
    subject: str | None = None,
) -> None:
    """Refuse an output that is, lies inside or (``refuse_containing``) contains an input.

    ``inputs`` maps a flag to its path; paths that do not exist here (model hub names, empty
    flags) are no local input and are skipped. Paths are compared after resolving links.
    ``subject`` names the output in the message (default: the flag and the path).
    """
    target = _resolved(output)
    for input_flag, input_path in inputs.items():
        if not input_path or not Path(input_path).exists():
            continue
        source = _resolved(input_path)
        if target == source:
            relation = f"is the {input_flag} input itself"
        elif source in target.parents:
            relation = f"lies inside the {input_flag} input {input_path}"
        elif refuse_containing and target in source.parents:
            relation = f"contains the {input_flag} input {input_path}"
        else:
            continue
        raise OutputDirError(
            f"{subject or f'{flag} {output}'} {relation}; write outputs to a folder apart from "
            "the inputs."
        )


# --- the manifest -----------------------------------------------------------------------------


def _safe_relative(name: object) -> str | None:
    """A manifest entry as a relative path that stays inside the folder, else None."""
    if not isinstance(name, str) or not name:
        return None
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name:
        return None
    return path.as_posix()


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``; an absent or unreadable one lists no file (nothing counts as
    the tool's, so nothing is deleted)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"files": []}
    if not isinstance(payload, dict) or not isinstance(payload.get("files"), list):
        return {"files": []}
    return payload


def manifest_files(path: Path) -> set[str]:
    """The relative paths a manifest lists (entries leaving the folder are ignored)."""
    names = (_safe_relative(name) for name in read_manifest(path)["files"])
    return {name for name in names if name is not None}


def _write_manifest(folder: Path, name: str, files: Iterable[str], extra: Mapping) -> None:
    payload = {**extra, "files": sorted(set(files))}
    write_json_atomic(folder / name, payload)


def claim_file_names(
    folder: Path, names: Iterable[str], *, flag: str, overwrite: bool = False
) -> None:
    """Refuse names in ``folder`` that exist and are not listed in its manifest (a user's files).

    Raises:
        OutputDirError: naming the first such file.
    """
    ours = manifest_files(folder / MANIFEST_NAME)
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            raise OutputDirError(f"{flag} {folder} holds a folder {name} where a file goes.")
        if not overwrite and (path.exists() or path.is_symlink()) and name not in ours:
            raise OutputDirError(
                f"{flag} {folder} already holds {name}, which this tool did not write; choose "
                "another folder or pass --overwrite to replace it."
            )


def record_files(folder: Path, names: Iterable[str]) -> None:
    """Add ``names`` to the manifest of ``folder`` (call before writing them: a crash then never
    makes a file of ours look like a user's)."""
    names = set(names)
    if not names:
        return
    manifest = folder / MANIFEST_NAME
    payload = read_manifest(manifest)
    files = manifest_files(manifest) | names
    _write_manifest(
        folder, MANIFEST_NAME, files, {k: v for k, v in payload.items() if k != "files"}
    )


# --- whole output folders ---------------------------------------------------------------------


def _entries(folder: Path, scope: tuple[str, ...] | None, skip: set[str]) -> list[str]:
    """Relative paths of every non-folder entry under ``folder`` (links are not followed)."""
    found = []
    tops = sorted(os.listdir(folder)) if scope is None else [n for n in scope if n]
    for top in tops:
        if top in skip:
            continue
        path = folder / top
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            found.append(top)
            continue
        if not path.is_dir():
            continue
        for directory, subdirectories, files in os.walk(path):
            base = Path(directory).relative_to(folder)
            # a link to a folder is an entry of its own, never walked into
            links = [d for d in subdirectories if (Path(directory) / d).is_symlink()]
            subdirectories[:] = sorted(d for d in subdirectories if d not in links)
            found += [(base / name).as_posix() for name in sorted(files + links)]
    return found


class OutputFolder:
    """One output folder, written through a staging folder; see the module docstring.

    Args:
        path: the output folder as the user named it.
        flag: the flag that named it, for messages ("--save_path").
        inputs: the tool's inputs (flag to path) the output must keep apart from.
        overwrite: write beside files the tool did not write, replacing same-named ones.
        scope: top-level names the tool owns inside ``path`` (None: all of it); files beside
            them are neither checked nor touched.
        manifest_name: file name of the manifest inside ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        flag: str,
        inputs: Mapping[str, str | os.PathLike | None] | None = None,
        overwrite: bool = False,
        scope: tuple[str, ...] | None = None,
        manifest_name: str = MANIFEST_NAME,
    ) -> None:
        self.path = Path(path)
        self.target = _resolved(path)
        self.flag = flag
        self.inputs = dict(inputs or {})
        self.overwrite = overwrite
        self.scope = scope
        self.manifest_name = manifest_name
        self.staging: Path | None = None
        self.keep_staging = False  # set when the results could not be placed: they stay there

    # --- before writing ---

    def foreign_files(self) -> list[str]:
        """Files under the output that the manifest does not list."""
        if not self.target.is_dir():
            return []
        ours = self.our_files()
        return [
            name
            for name in _entries(self.target, self.scope, {self.manifest_name})
            if name not in ours
        ]

    def our_files(self) -> set[str]:
        ours = manifest_files(self.target / self.manifest_name)
        if self.scope is not None:
            ours = {name for name in ours if name.split("/")[0] in self.scope}
        return ours

    def check(self) -> None:
        """Raise OutputDirError when this output may not be written."""
        target, shown = self.target, f"{self.flag} {self.path}"
        if target.exists() and not target.is_dir():
            raise OutputDirError(f"{shown} is a file; expected a folder.")
        check_apart_from_inputs(self.path, self.flag, self.inputs)
        if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
            raise OutputDirError(f"{shown} is not writable.")
        if not self.overwrite:
            foreign = self.foreign_files()
            if foreign:
                raise OutputDirError(
                    f"{shown} holds {len(foreign)} file(s) this tool did not write (e.g. "
                    f"{foreign[0]}); choose a new or empty folder, or pass --overwrite to write "
                    "beside them."
                )

    def claim(self) -> Path:
        """Check the output and create the staging folder the tool writes into; returns it."""
        self.check()
        parent = self.target.parent
        existing = next(p for p in (self.target, *self.target.parents) if p.exists())
        if not existing.is_dir():
            raise OutputDirError(
                f"{self.flag} {self.path} cannot be created: {existing} is a file, not a folder."
            )
        try:
            parent.mkdir(parents=True, exist_ok=True)
            base = parent
            if self.target.is_dir() and (
                not os.access(parent, os.W_OK | os.X_OK)
                or os.stat(self.target).st_dev != os.stat(parent).st_dev
            ):
                base = self.target  # renames must stay on one file system
            self.staging = make_private_dir(base, self.target.name)
        except OSError as error:
            raise OutputDirError(
                f"{self.flag} {self.path} cannot be written ({error.strerror or error})."
            ) from None
        return self.staging

    # --- after writing ---

    def commit(self, manifest_extra: Mapping | None = None) -> int:
        """Place the staged files and delete the files of an earlier run that this one did not
        write; returns how many were deleted.

        Raises:
            OutputDirError: something of the user's is in the way (the staged results then stay
                where they are, and the message says where).
        """
        if self.staging is None:
            raise RuntimeError("commit() before claim()")
        extra = dict(manifest_extra or {})
        staged = set(_entries(self.staging, None, {self.manifest_name}))
        target = self.target
        if not target.exists() or (target.is_dir() and not os.listdir(target)):
            _write_manifest(self.staging, self.manifest_name, staged, extra)
            try:
                os.rename(self.staging, target)  # replaces an empty folder, never a full one
                self.staging = None
                return 0
            except OSError:  # the output appeared meanwhile: place file by file below
                (self.staging / self.manifest_name).unlink()
        if not target.is_dir():
            self.keep_staging = True
            raise OutputDirError(
                f"{self.flag} {self.path} became a file while this tool ran; the results stay "
                f"in {self.staging}."
            )
        earlier = self.our_files()
        self._check_nothing_in_the_way(staged, earlier)
        # a kill from here on leaves every file of ours listed
        _write_manifest(target, self.manifest_name, earlier | staged, {**extra, "complete": False})
        created: set[Path] = set()
        for name in sorted(staged):
            destination = target / name
            if destination.parent not in created:
                destination.parent.mkdir(parents=True, exist_ok=True)
                created.add(destination.parent)
            os.replace(self.staging / name, destination)
        removed = self._remove(earlier - staged)
        _write_manifest(target, self.manifest_name, staged, extra)
        self.discard()
        return removed

    def _check_nothing_in_the_way(self, staged: set[str], earlier: set[str]) -> None:
        for name in sorted(staged):
            destination = self.target / name
            blocker = next(
                (
                    parent
                    for parent in reversed(destination.relative_to(self.target).parents)
                    if str(parent) != "."
                    and ((self.target / parent).is_symlink() or (self.target / parent).is_file())
                ),
                None,
            )
            if blocker is not None:
                problem = f"{blocker} is a file or link where a folder goes"
            elif destination.is_dir() and not destination.is_symlink():
                problem = f"{name} is a folder where a file goes"
            elif destination.exists() and name not in earlier and not self.overwrite:
                problem = f"{name} appeared while this tool ran"
            else:
                continue
            self.keep_staging = True
            raise OutputDirError(
                f"{self.flag} {self.path}: {problem}; the results stay in {self.staging}."
            )

    def _remove(self, names: Iterable[str]) -> int:
        """Delete files of ours (never through a link out of the folder); then the folders
        that deleting them left empty."""
        removed = 0
        for name in sorted(names):
            path = self.target / name
            if path.parent.resolve() != self.target / Path(name).parent:
                continue  # a link in the path: the file is not where the manifest says
            if path.is_symlink() or path.is_file():
                path.unlink()
                removed += 1
                for parent in path.relative_to(self.target).parents:
                    folder = self.target / parent
                    if folder == self.target or any(folder.iterdir()):
                        break
                    folder.rmdir()
        return removed

    def discard(self) -> None:
        """Delete the staging folder (this tool created it; all of it is this run's)."""
        if self.staging is not None and self.staging.is_dir():
            shutil.rmtree(self.staging)
        self.staging = None

    def __enter__(self) -> OutputFolder:
        if self.staging is None:
            self.claim()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None and not self.keep_staging:
            self.discard()
