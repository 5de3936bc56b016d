import shutil
import subprocess
import sys
from pathlib import Path

from utils.check_dataset import main

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_complete_tree_passes(tree, capsys):
    flags = ["--refer_seg_data", "refclef||refcoco||refcoco+||refcocog||grefcoco"]
    vals = "ReasonSeg|val||refcoco|unc|val||refcoco|unc|testA||refcocog|umd|test||grefcoco|unc|val"
    assert main(["--dataset_dir", str(tree), *flags, "--val_dataset", vals]) == 0
    out = capsys.readouterr().out
    assert "17 of 17 requested sources can be used" in out
    assert "ok       ade20k" in out and "first malformed" not in out


def test_missing_source_and_malformed_file(tree, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(tree, root)
    shutil.rmtree(root / "vlpart/pascal_part")
    (next((root / "reason_seg/ReasonSeg/val").glob("*.jpg"))).write_bytes(b"\xff\xd8 truncated")
    code = main(
        ["--dataset_dir", str(root), "--dataset", "sem_seg||reason_seg", "--sample_rates", "3,1"]
    )
    out = capsys.readouterr().out
    assert code == 1
    expected = root / "vlpart/pascal_part/train.json"
    assert (
        f"MISSING  pascal_part            expected the file {expected}, which does not exist."
        in out
    )
    assert "first malformed: Cannot read image" in out and "(unreadable_image)" in out
    assert "6 of 7 requested sources can be used" in out


def test_user_errors_give_one_sentence_and_status_one(tree, tmp_path):
    def check(dataset_dir):
        return subprocess.run(
            [sys.executable, "-m", "utils.check_dataset", "--dataset_dir", str(dataset_dir),
             "--dataset", "vqa||sem_seg", "--sample_rates", "1,1", "--sem_seg_data", "partimagenet"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    for dataset_dir, expected in (
        (tmp_path / "nowhere", f"--dataset_dir {tmp_path / 'nowhere'} is not a folder."),
        (tree, "--sem_seg_data: unknown entry 'partimagenet'"),
    ):
        result = check(dataset_dir)
        assert result.returncode == 1
        assert "Traceback" not in result.stdout + result.stderr
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0]
