"""utils.output_dir on its own: staging, placement, the manifest, and what happens when something
of the user's gets in the way while a tool runs."""

import json
import os
import stat

import pytest

from utils.output_dir import (
    MANIFEST_NAME,
    OutputDirError,
    OutputFolder,
    claim_file_names,
    record_files,
    write_bytes_atomic,
)


def staged_write(folder: OutputFolder, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder.staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def listing(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_new_output_is_the_staged_folder_renamed(tmp_path):
    folder = OutputFolder(tmp_path / "out", flag="--out")
    staging = folder.claim()
    assert staging.parent == tmp_path and staging.name.startswith(".out.")
    staged_write(folder, {"a.npy": b"1", "sub/b.npy": b"2"})
    assert folder.commit() == 0
    assert listing(tmp_path) == [
        "out",
        f"out/{MANIFEST_NAME}",
        "out/a.npy",
        "out/sub",
        "out/sub/b.npy",
    ]
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["files"] == [
        "a.npy",
        "sub/b.npy",
    ]


def test_the_output_folder_gets_the_modes_of_the_umask(tmp_path):
    folder = OutputFolder(tmp_path / "out", flag="--out")
    with folder:
        staged_write(folder, {"a.npy": b"1"})
        folder.commit()
    (tmp_path / "plain").mkdir()
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "plain").stat().st_mode
    )


def test_a_failure_while_writing_leaves_nothing(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MANIFEST_NAME).write_text('{"files": ["a.npy"]}')
    (tmp_path / "out" / "a.npy").write_bytes(b"earlier")
    before = listing(tmp_path)
    with pytest.raises(KeyError), OutputFolder(tmp_path / "out", flag="--out") as folder:
        staged_write(folder, {"a.npy": b"new"})
        raise KeyError("interrupted")
    assert listing(tmp_path) == before and (tmp_path / "out" / "a.npy").read_bytes() == b"earlier"


@pytest.mark.parametrize(
    "in_the_way, message",
    [
        ("file", "a.npy appeared while this tool ran"),
        ("folder", "a.npy is a folder where a file goes"),
        ("link", "sub is a file or link where a folder goes"),
    ],
)
def test_something_of_the_users_in_the_way_at_the_end_keeps_both(tmp_path, in_the_way, message):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_bytes(b"mine")
    record_files(output, ["notes.txt"])  # listed as ours: the output is claimed alone
    folder = OutputFolder(output, flag="--out")
    with pytest.raises(OutputDirError, match=message), folder:
        staged_write(folder, {"a.npy": b"1", "sub/b.npy": b"2"})
        if in_the_way == "file":
            (output / "a.npy").write_bytes(b"the user's")  # made while the tool ran
        elif in_the_way == "folder":
            (output / "a.npy").mkdir()
        else:
            (tmp_path / "elsewhere").mkdir()
            (output / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        folder.commit()
    assert (folder.staging / "a.npy").read_bytes() == b"1"  # the results stay where they are
    assert (output / "notes.txt").read_bytes() == b"mine"  # not deleted: nothing was placed
    assert not (tmp_path / "elsewhere" / "b.npy").exists()
    if in_the_way == "file":
        assert (output / "a.npy").read_bytes() == b"the user's"


def test_an_unreadable_manifest_makes_nothing_ours(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / MANIFEST_NAME).write_text("{ broken")
    (output / "a.npy").write_bytes(b"whose?")
    with pytest.raises(OutputDirError, match=r"1 file\(s\) this tool did not write"):
        OutputFolder(output, flag="--out").claim()
    assert listing(tmp_path) == ["out", f"out/{MANIFEST_NAME}", "out/a.npy"]


def test_file_names_are_claimed_against_the_manifest(tmp_path):
    (tmp_path / "mine.jpg").write_bytes(b"the user's")
    (tmp_path / "ours.jpg").write_bytes(b"written before")
    record_files(tmp_path, ["ours.jpg"])
    claim_file_names(tmp_path, ["ours.jpg", "new.jpg"], flag="--vis")
    with pytest.raises(OutputDirError, match="already holds mine.jpg"):
        claim_file_names(tmp_path, ["ours.jpg", "mine.jpg"], flag="--vis")
    claim_file_names(tmp_path, ["mine.jpg"], flag="--vis", overwrite=True)
    record_files(tmp_path, [])  # nothing to add: the manifest is left as it is
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["files"] == ["ours.jpg"]


def test_an_atomic_write_leaves_no_temporary_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.jpg"
    target.write_bytes(b"before")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_bytes_atomic(target, b"after")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]
    assert target.read_bytes() == b"before"
