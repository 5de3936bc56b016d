"""predict.py on a small ReasonSeg split made from the reference images, scored by eval_mask.py."""

import json
import math
import shutil

import numpy as np
import pytest

import eval_mask
import predict
from tests.bad_inputs.user_files import forbid_model_load
from utils.metrics import intersection_and_union
from utils.output_dir import MANIFEST_NAME
from utils.reason_seg import load_annotation, render_mask


def circle(cx, cy, r, points=64):
    return [
        [cx + r * math.cos(2 * math.pi * k / points), cy + r * math.sin(2 * math.pi * k / points)]
        for k in range(points)
    ]


@pytest.fixture
def split(tiny_cases_dir, tmp_path):
    """dataset/reason_seg/ReasonSeg/val with img3 (short query), img1 (sentence), a broken jpg."""
    folder = tmp_path / "dataset" / "reason_seg" / "ReasonSeg" / "val"
    folder.mkdir(parents=True)
    # PNG bytes under a .jpg name: the split lists *.jpg, and the pixels stay exactly those
    # the reference was computed on (images are decoded by content, not by extension)
    for name in ("img1", "img3"):
        shutil.copy(tiny_cases_dir / f"{name}.png", folder / f"{name}.jpg")
    annotations = {
        "img3": (["the orange circle"], False, circle(120, 220, 60)),
        "img1": (["the round red thing a stop sign is painted with"], True, circle(90, 120, 50)),
        "broken": (["anything"], False, circle(10, 10, 5)),
    }
    for stem, (texts, is_sentence, polygon) in annotations.items():
        shape = {"label": "target", "points": polygon}
        (folder / f"{stem}.json").write_text(
            json.dumps({"text": texts, "is_sentence": is_sentence, "shapes": [shape]})
        )
    (folder / "broken.jpg").write_text("not a picture")
    return folder


def run_predict(tiny_lisa_dir, *argv):
    model = ["--version", str(tiny_lisa_dir), "--vision-tower", str(tiny_lisa_dir / "clip")]
    return predict.main([*model, "--precision", "fp32", "--workers", "0", *map(str, argv)])


@pytest.mark.reference
def test_predictions_close_the_loop_with_eval_mask(tiny_lisa_dir, split, tmp_path, capsys):
    predictions = tmp_path / "pred"
    dataset_dir = split.parents[2]
    code = run_predict(
        tiny_lisa_dir, "--dataset_dir", dataset_dir, "--val_dataset", "ReasonSeg|val",
        "--output_dir", predictions, "--batch_size", 2,
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "2 prediction files written" in out and "(1 images skipped)" in out
    assert f"--groundtruth_dir={split}" in out
    written = sorted(p.name for p in predictions.iterdir() if p.name != MANIFEST_NAME)
    assert written == ["img1.npy", "img3.npy"]
    img3 = np.load(predictions / "img3.npy")
    assert img3.dtype == np.bool_ and img3.shape == (1, 320, 213)
    assert int(img3.sum()) == pytest.approx(36959, abs=2)  # validate()'s mask in the reference
    assert np.load(predictions / "img1.npy").shape == (1, 240, 320)

    report_file = tmp_path / "report.json"
    code = eval_mask.main(
        ["--submission_dir", str(predictions), "--groundtruth_dir", str(split)]
        + ["--output_json", str(report_file)]
    )
    assert code == 0
    report = json.loads(report_file.read_text())
    assert list(report["skipped"]) == ["broken"] and report["missing_predictions"] == []
    assert set(report["splits"]) == {"short_query", "long_sentence"}
    for stem, height, width in (("img1", 240, 320), ("img3", 320, 213)):
        truth = render_mask(load_annotation(split / f"{stem}.json"), height, width)
        intersection, union = intersection_and_union(np.load(predictions / f"{stem}.npy")[0], truth)
        scored = report["per_image"][stem]
        assert (scored["intersection"], scored["union"]) == ([int(intersection)], [int(union)])
        assert 0 < scored["intersection"][0] < scored["union"][0]


@pytest.mark.reference
def test_a_plain_folder_gives_the_same_files_and_ground_truth_label_maps(
    tiny_lisa_dir, split, tmp_path, capsys
):
    (split / "broken.json").unlink()
    (split / "broken.jpg").unlink()
    predictions, truth = tmp_path / "pred", tmp_path / "truth"
    code = run_predict(
        tiny_lisa_dir, "--image_dir", split, "--output_dir", predictions,
        "--save_groundtruth", truth,
    )  # fmt: skip
    assert code == 0 and f"--groundtruth_dir={truth}" in capsys.readouterr().out
    assert int(np.load(predictions / "img3.npy").sum()) == pytest.approx(36959, abs=2)
    saved_truth = np.load(truth / "img3.npy")
    expected = render_mask(load_annotation(split / "img3.json"), 320, 213)
    np.testing.assert_array_equal(saved_truth, expected[None])
    summaries = []
    for groundtruth in (split, truth):
        assert (
            eval_mask.main(
                ["--submission_dir", str(predictions), "--groundtruth_dir", str(groundtruth)]
            )
            == 0
        )
        summaries.append(capsys.readouterr().out.splitlines()[0])
    assert summaries[0] == summaries[1]  # same gIoU / cIoU from the json and the label maps


def test_missing_split_and_checkpoint_are_one_sentence(tmp_path, capsys, monkeypatch):
    forbid_model_load(monkeypatch, predict, "load_pretrained_model")
    checkpoint, data = tmp_path / "checkpoint", tmp_path / "data"
    checkpoint.mkdir()
    argv = ["--version", str(checkpoint), "--output_dir", str(tmp_path / "p")]
    assert predict.main([*argv, "--dataset_dir", str(data)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reason_seg/ReasonSeg/val, which does not exist" in err
    assert predict.main([*argv, "--image_dir", str(tmp_path / "nothing")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    monkeypatch.undo()
    (data / "reason_seg" / "ReasonSeg" / "val").mkdir(parents=True)
    code = predict.main([*argv, "--dataset_dir", str(data)])
    assert code == 1 and "no config.json" in capsys.readouterr().err
    # nothing written on a failed start, not even the staging folder
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint", "data"]
