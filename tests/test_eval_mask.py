"""eval_mask.py on small hand-made folders whose IoUs are worked out by hand."""

import json

import numpy as np
import pytest
from PIL import Image

import eval_mask

EPS = 1e-5  # validate() adds it to every union


def write_reason_seg(folder, stem, is_sentence, shapes, size=(8, 6)):
    """A ReasonSeg pair: <stem>.jpg (size = W, H) and <stem>.json."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(folder / f"{stem}.jpg")
    annotation = {
        "text": [f"query about {stem}"],
        "is_sentence": is_sentence,
        "shapes": [{"label": label, "points": points} for label, points in shapes],
    }
    (folder / f"{stem}.json").write_text(json.dumps(annotation))


def rectangle(x0, y0, x1, y1):
    """Polygon whose rendering covers columns x0..x1 and rows y0..y1 (inclusive)."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


@pytest.fixture
def reason_seg_case(tmp_path):
    """Three annotated images (one short query, two sentences), two predictions and a stray."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    pred.mkdir()
    # short: target 4x3 = 12 px, columns 6-7 ignored; predicted: the target, the ignored
    # columns (not counted) and one wrong pixel -> I 12, U 13
    write_reason_seg(
        gt, "short", False, [("target", rectangle(1, 1, 4, 3)), ("ignore", rectangle(6, 0, 7, 5))]
    )
    short = np.zeros((6, 8), dtype=bool)
    short[1:4, 1:5] = True
    short[:, 6:] = True
    short[5, 0] = True
    np.save(pred / "short.npy", short)
    # long: target 3x3 = 9 px; probabilities above 0.5 on 6 of them only -> I 6, U 9
    write_reason_seg(gt, "long", True, [("target", rectangle(0, 0, 2, 2))])
    scores = np.full((6, 8), 0.2, dtype=np.float32)
    scores[0:2, 0:3] = 0.9
    np.save(pred / "long.npy", scores)
    # missing: no prediction file -> empty mask, I 0, U 9
    write_reason_seg(gt, "missing", True, [("target", rectangle(0, 0, 2, 2))])
    np.save(pred / "stray.npy", np.zeros((6, 8), dtype=bool))  # no ground truth
    return gt, pred


def run(capsys, *argv):
    code = eval_mask.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_reason_seg_folder_scores_split_missing_and_extra(reason_seg_case, tmp_path, capsys):
    gt, pred = reason_seg_case
    report_file = tmp_path / "report.json"
    code, out, err = run(
        capsys,
        "--submission_dir", pred, "--groundtruth_dir", gt,
        "--threshold", "0.5", "--output_json", report_file,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(report_file.read_text())
    per_image = report["per_image"]
    assert per_image["short"]["intersection"] == [12] and per_image["short"]["union"] == [13]
    assert per_image["long"]["intersection"] == [6] and per_image["long"]["union"] == [9]
    assert per_image["missing"] == {
        "prediction": None,
        "is_sentence": True,
        "intersection": [0],
        "union": [9],
        "iou": [0.0],
        "missing_masks": 0,
        "extra_masks": 0,
    }
    assert report["giou"] == pytest.approx((12 / (13 + EPS) + 6 / (9 + EPS) + 0) / 3)
    assert report["ciou"] == pytest.approx(18 / 31)
    assert report["splits"]["short_query"]["giou"] == pytest.approx(12 / (13 + EPS))
    assert report["splits"]["long_sentence"]["giou"] == pytest.approx(6 / (9 + EPS) / 2)
    assert report["splits"]["long_sentence"]["ciou"] == pytest.approx(6 / 18)
    assert report["missing_predictions"] == ["missing"]
    assert report["extra_predictions"] == ["stray.npy"]
    assert "missing predictions (scored as empty masks): 1: missing" in out
    assert "extra predictions (no ground truth, not scored): 1: stray.npy" in out
    assert f"gIoU {report['giou']:.4f}  cIoU {report['ciou']:.4f}" in out


def test_label_maps_with_several_targets_empty_masks_and_png(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    # two targets: a 2x2 object next to an ignored pixel, and an empty target
    targets = np.zeros((2, 5, 5), dtype=np.uint8)
    targets[0, :2, :2] = 1
    targets[0, 4, 4] = 255
    np.save(gt / "multi.npy", targets)
    # three masks: the object plus one wrong pixel plus the ignored one (I 4, U 5); nothing
    # for the empty target (U 0 -> IoU 1); a third mask with no target (reported, not scored)
    masks = np.zeros((3, 5, 5), dtype=bool)
    masks[0, :2, :2] = True
    masks[0, 2, 2] = True
    masks[0, 4, 4] = True
    masks[2] = True
    np.save(pred / "multi.npy", masks)
    # fewer masks than targets: the second target counts as missed (I 0, U 2)
    pair = np.zeros((2, 5, 5), dtype=np.uint8)
    pair[0, 0, :2] = 1
    pair[1, 4, :2] = 1
    np.save(gt / "pair.npy", pair)
    np.save(pred / "pair.npy", pair[:1].astype(bool))
    # PNG on both sides: label map 0/1/255, prediction 0/255 -> I 2, U 3
    label = np.zeros((4, 4), dtype=np.uint8)
    label[0, :3] = 1
    label[3, 3] = 255
    Image.fromarray(label).save(gt / "single.png")
    predicted = np.zeros((4, 4), dtype=np.uint8)
    predicted[0, :2] = 255
    predicted[3, 3] = 255
    Image.fromarray(predicted).save(pred / "single.png")

    report_file = tmp_path / "report.json"
    code, out, err = run(
        capsys, "--submission_dir", pred, "--groundtruth_dir", gt, "--output_json", report_file
    )
    assert code == 0, err
    report = json.loads(report_file.read_text())
    multi, pair_scores, single = (report["per_image"][k] for k in ("multi", "pair", "single"))
    assert (multi["intersection"], multi["union"]) == ([4, 0], [5, 0])
    assert multi["iou"] == [pytest.approx(4 / (5 + EPS)), 1.0]
    assert multi["extra_masks"] == 1
    assert (pair_scores["intersection"], pair_scores["union"]) == ([2, 0], [2, 2])
    assert pair_scores["missing_masks"] == 1
    assert (single["intersection"], single["union"]) == ([2], [3])
    assert report["num_masks"] == 5 and report["splits"] == {}
    ious = [4 / (5 + EPS), 1.0, 2 / (2 + EPS), 0.0, 2 / (3 + EPS)]
    assert report["giou"] == pytest.approx(sum(ious) / 5)
    assert report["ciou"] == pytest.approx(8 / 12)
    assert report["extra_masks"] == 1 and report["missing_masks"] == 1
    assert "beyond the number of targets (not scored): 1" in out


def test_shape_mismatch_is_one_sentence_or_resized_on_request(reason_seg_case, capsys):
    gt, pred = reason_seg_case
    (pred / "long.npy").unlink()
    doubled = np.load(pred / "short.npy").repeat(2, axis=0).repeat(2, axis=1)  # [12, 16]
    np.save(pred / "short.npy", doubled)
    code, out, err = run(capsys, "--submission_dir", pred, "--groundtruth_dir", gt)
    assert code == 1 and "Traceback" not in err
    assert err.count("\n") == 1
    assert "short.npy is 16x12 (WxH) but its ground truth is 8x6" in err
    assert "--resize_to_gt" in err
    code, out, err = run(
        capsys, "--submission_dir", pred, "--groundtruth_dir", gt, "--resize_to_gt"
    )
    assert code == 0
    assert f"gIoU {(12 / (13 + EPS) + 0 + 0) / 3:.4f}" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.array([[0.1, np.nan], [0.3, 0.4]], dtype=np.float32), "contains NaN"),
        (np.array([[0.1, 0.7], [0.3, 0.4]], dtype=np.float32), "pass --threshold"),
        (np.array([[0, 7], [3, 0]], dtype=np.uint8), "grey levels"),
        (np.zeros((2, 2, 2, 2), dtype=bool), "expected [H, W] or [n, H, W]"),
        (b"not a numpy file", "cannot read prediction"),
    ],
)
def test_bad_prediction_files_get_one_sentence(tmp_path, capsys, content, message):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    np.save(gt / "a.npy", np.zeros((2, 2), dtype=np.uint8))
    if isinstance(content, bytes):
        (pred / "a.npy").write_bytes(content)
    else:
        np.save(pred / "a.npy", content)
    code, _, err = run(capsys, "--submission_dir", pred, "--groundtruth_dir", gt)
    assert code == 1
    assert message in err and "a.npy" in err and err.count("\n") == 1


def test_bad_ground_truth_and_folders_get_one_sentence(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    code, _, err = run(capsys, "--submission_dir", pred, "--groundtruth_dir", gt)
    assert code == 1 and "no ground truth in" in err
    np.save(gt / "a.npy", np.array([[0, 7]], dtype=np.uint8))
    code, _, err = run(capsys, "--submission_dir", pred, "--groundtruth_dir", gt)
    assert code == 1 and "holds the value 7" in err
    code, _, err = run(capsys, "--submission_dir", tmp_path / "nope", "--groundtruth_dir", gt)
    assert code == 1 and "is not a directory" in err


def test_unusable_ground_truth_skips_the_image_and_says_so(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    pred.mkdir()
    write_reason_seg(gt, "good", False, [("target", rectangle(0, 0, 1, 1))])
    write_reason_seg(gt, "line", False, [("target", [[0, 0], [3, 3]])])  # 2 points
    write_reason_seg(gt, "broken", False, [("target", rectangle(0, 0, 1, 1))])
    (gt / "broken.jpg").write_text("not a picture")
    write_reason_seg(gt, "lonely", False, [("target", rectangle(0, 0, 1, 1))])
    (gt / "lonely.jpg").unlink()
    np.save(pred / "good.npy", np.zeros((6, 8), dtype=bool))
    report_file = tmp_path / "report.json"
    code, out, err = run(
        capsys, "--submission_dir", pred, "--groundtruth_dir", gt, "--output_json", report_file
    )
    assert code == 0
    assert "skipped images (unusable ground truth): 3: broken, line, lonely" in out
    assert "images 1  masks 1" in out
    skipped = json.loads(report_file.read_text())["skipped"]
    assert "broken.jpg" in skipped["broken"] and "3 or more" in skipped["line"]
    assert "no image beside it" in skipped["lonely"]
