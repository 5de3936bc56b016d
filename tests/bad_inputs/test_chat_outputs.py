"""chat.py and where it writes: a --vis_save_path or --output_json that is a file, a folder, an
input or lies inside one is refused in one line (exit status 2) before the model loads; a mask
picture never replaces a file chat.py did not write (one-shot: exit status 2 after the answer;
interactive: one line and the chat goes on); re-runs replace chat.py's own files and --overwrite
those of the same names, and every other file of the user's stays byte-identical."""

import json
import shutil

import pytest

import chat
from tests.bad_inputs.user_files import (
    UserFiles,
    assert_one_line,
    assert_process_refuses,
    forbid_model_load,
    read_only,
)

RED_CIRCLE = "Can you segment the red circle in this image?"


@pytest.fixture
def place(tmp_path):
    """A checkpoint folder, an image, and files of the user's."""
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text("{}")
    user = UserFiles()
    user.add(tmp_path / "photo.png", b"\x89PNG not read before the outputs are checked")
    user.add(tmp_path / "notes.json", b'{"my": "notes"}')
    user.add(tmp_path / "a_file")
    user.keep(tmp_path / "checkpoint")
    return tmp_path, user


# name: (extra flags, what the one line says); "{r}" is the test's folder
REFUSALS = {
    "vis path a file": (["--vis_save_path={r}/a_file"], "is a file; expected a folder"),
    "vis path under a file": (["--vis_save_path={r}/a_file/vis"], "cannot be created"),
    "vis path the checkpoint": (["--vis_save_path={r}/checkpoint"], "is the --version input"),
    "vis path in the checkpoint": (
        ["--vis_save_path={r}/checkpoint/v"],
        "lies inside the --version",
    ),
    "json over the user's file": (["--output_json={r}/notes.json"], "is not a chat.py result"),
    "json a folder": (["--output_json={r}/checkpoint"], "is the --version input itself"),
    "json an existing folder": (["--output_json={r}/vis"], "is a folder; expected a file name"),
    "json over the image": (["--output_json={r}/photo.png"], "is the --image input itself"),
    "json in the checkpoint": (
        ["--output_json={r}/checkpoint/r.json"],
        "lies inside the --version",
    ),
}


def one_shot_argv(root) -> list[str]:
    """A one-shot question about the place's image, to its checkpoint folder."""
    return [
        "--version",
        str(root / "checkpoint"),
        "--prompt",
        "hi",
        "--image",
        str(root / "photo.png"),
    ]


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_output_is_one_line_before_the_model_loads(place, case, capsys, monkeypatch):
    forbid_model_load(monkeypatch, chat, "load_segmenter")
    root, user = place
    (root / "vis").mkdir()
    extra, expected = REFUSALS[case]
    argv = one_shot_argv(root)
    argv += ["--vis_save_path", str(root / "vis")]  # a later flag of the case replaces it
    before = sorted(p.name for p in root.iterdir())
    assert chat.main([*argv, *(flag.format(r=root) for flag in extra)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line(err, "chat.py: --", expected)
    user.assert_untouched()
    assert sorted(p.name for p in root.iterdir()) == before


def test_the_script_exits_2_with_one_line(place):
    root, user = place
    command = ["chat.py", *one_shot_argv(root), "--output_json", str(root / "notes.json")]
    result = assert_process_refuses(command, "chat.py:", "--output_json", "--overwrite")
    assert result.stdout == ""
    user.assert_untouched()


@pytest.fixture(scope="module")
def model_args(tiny_lisa_dir):
    model = ["--version", str(tiny_lisa_dir), "--vision-tower", str(tiny_lisa_dir / "clip")]
    return [*model, "--precision", "fp32", "--max_new_tokens", "16"]


@pytest.mark.reference
def test_one_shot_never_replaces_a_users_picture(model_args, tiny_cases_dir, tmp_path, capsys):
    user = UserFiles()
    vis, result_file = tmp_path / "vis", tmp_path / "result.json"
    theirs = user.add(vis / "img1_mask_0.jpg", b"the user's picture")
    user.add(vis / "holiday.jpg")
    argv = [*model_args, "--prompt", RED_CIRCLE, "--image", str(tiny_cases_dir / "img1.png")]
    argv += ["--vis_save_path", str(vis), "--output_json", str(result_file)]
    assert chat.main(argv) == 2
    out, err = capsys.readouterr()
    assert out.startswith("text_output: ")  # the answer is shown all the same
    assert_one_line(err, "chat.py: the masks of this answer were not saved", "img1_mask_0.jpg")
    user.assert_untouched()
    assert sorted(p.name for p in vis.iterdir()) == ["holiday.jpg", "img1_mask_0.jpg"]
    assert not result_file.exists()

    # --overwrite replaces the file of that name, and nothing else
    assert chat.main([*argv, "--overwrite"]) == 0
    assert theirs.read_bytes() != b"the user's picture"
    del user.contents[theirs]
    user.assert_untouched()
    assert json.loads(result_file.read_text())["masks"][0]["mask_path"] == str(theirs)
    # a re-run replaces chat.py's own pictures and result without --overwrite
    assert chat.main(argv) == 0
    assert "img1_masked_img_0.jpg has been saved." in capsys.readouterr().out
    user.assert_untouched()


@pytest.mark.reference
def test_the_interactive_chat_goes_on_after_a_picture_is_refused(
    model_args, tiny_cases_dir, tmp_path, capsys, monkeypatch
):
    user = UserFiles()
    vis = tmp_path / "vis"
    user.add(vis / "img1_mask_0.jpg", b"the user's picture")
    copy = shutil.copy(tiny_cases_dir / "img1.png", tmp_path / "copy.png")
    answers = iter([RED_CIRCLE, str(tiny_cases_dir / "img1.png"), RED_CIRCLE, str(copy), "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    segmenter = chat.load_segmenter(chat.parse_args(model_args))
    assert chat.interactive(segmenter, vis) == 0
    out = capsys.readouterr().out
    refusals = [line for line in out.splitlines() if "were not saved" in line]
    assert len(refusals) == 1 and "img1_mask_0.jpg" in refusals[0]
    assert "Traceback" not in out and out.count("text_output: ") == 2
    assert f"{vis / 'copy_mask_0.jpg'} has been saved." in out  # the next turn saved its masks
    user.assert_untouched()


def test_an_unwritable_picture_folder_is_one_line(place, capsys):
    root, user = place
    argv = one_shot_argv(root)
    with read_only(root / "locked") as locked:
        assert chat.main([*argv, "--vis_save_path", str(locked / "vis")]) == 2
        assert sorted(locked.iterdir()) == []
    assert_one_line(capsys.readouterr().err, "chat.py: --vis_save_path", "cannot be created")
    user.assert_untouched()
