import json

import numpy as np
from PIL import Image

from tests.utils.data.fake_tree import Box, reason_seg_annotation, write_image
from utils.render_reason_seg_masks import main

TARGET, IGNORED = Box(2, 3, 10, 20), Box(20, 5, 30, 12)


def _annotated(folder, name="a"):
    write_image(folder / f"{name}.jpg", 40, 48, [TARGET, IGNORED], np.random.default_rng(0))
    annotation = reason_seg_annotation(["cup"], False, [TARGET], [IGNORED])
    (folder / f"{name}.json").write_text(json.dumps(annotation))


def test_writes_the_documented_pictures(tmp_path, capsys):
    _annotated(tmp_path / "in")
    assert main(["--input_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out/a"
    labeled = np.asarray(Image.open(folder / "labeled_mask.png"))
    target = np.asarray(Image.open(folder / "target_mask.png"))
    ignore = np.asarray(Image.open(folder / "ignore_mask.png"))
    assert labeled.dtype == np.uint8 and set(np.unique(labeled)) == {0, 1, 255}
    assert np.array_equal(labeled == 1, TARGET.mask(40, 48) == 1)
    assert np.array_equal(labeled == 255, IGNORED.mask(40, 48) == 1)
    assert np.array_equal(target, np.where(labeled == 1, 255, 0))
    assert np.array_equal(ignore, np.where(labeled == 255, 255, 0))
    picture = np.asarray(Image.open(folder / "overlay.jpg"))
    assert picture.shape == (40, 96, 3)
    tinted = picture[TARGET.top + 3, 48 + TARGET.left + 3].astype(int)
    assert tinted[1] > tinted[0] + 60 and tinted[1] > tinted[2] + 60  # green over the target
    assert "rendered 1 of 1" in capsys.readouterr().out


def test_bad_files_are_reported_and_skipped(tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    _annotated(source, "good")
    _annotated(source, "broken")
    annotation = json.loads((source / "broken.json").read_text())
    annotation["shapes"][0]["points"] = [[0, 0], [4, 4]]
    (source / "broken.json").write_text(json.dumps(annotation))
    (source / "orphan.json").write_text("{}")
    assert main(["--input_dir", str(source), "--output_dir", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "skipped broken.json" in out and "skipped orphan.json" in out
    assert (tmp_path / "out/good/labeled_mask.png").is_file()
    assert main(["--input_dir", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().out.strip().endswith("is not a folder.")
