import json

import pytest

from utils.reason_seg import BadAnnotationError, load_annotation, render_mask


def write(path, shapes, text=("the red one",), is_sentence=False, encoding="utf-8"):
    payload = {"text": list(text), "is_sentence": is_sentence, "shapes": shapes}
    path.write_bytes(json.dumps(payload, ensure_ascii=False).encode(encoding))
    return path


def square(x0, y0, x1, y1, label):
    return {
        "label": label,
        "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
        "shape_type": "polygon",
    }


def test_smaller_polygons_are_painted_over_larger_ones(tmp_path):
    # the ignore region inside the target is listed first but stays visible
    path = write(tmp_path / "a.json", [square(4, 4, 6, 6, "ignore"), square(2, 2, 9, 9, "target")])
    mask = render_mask(load_annotation(path), 12, 12)
    assert mask[5, 5] == 255 and mask[3, 3] == 1 and mask[0, 0] == 0 and mask[10, 10] == 0
    assert (mask == 1).sum() == 8 * 8 - 3 * 3  # outline included: 2..9 inclusive


def test_flag_shapes_are_dropped(tmp_path):
    path = write(tmp_path / "a.json", [square(0, 0, 5, 5, "flag"), square(6, 6, 8, 8, "target")])
    mask = render_mask(load_annotation(path), 10, 10)
    assert mask[:5, :5].sum() == 0 and mask[7, 7] == 1


def test_cp1252_file_and_sentence_flag(tmp_path):
    path = write(
        tmp_path / "a.json",
        [square(1, 1, 3, 3, "target")],
        text=("caf\u00e9 table",),
        is_sentence=True,
        encoding="cp1252",
    )
    annotation = load_annotation(path)
    assert annotation.texts == ["caf\u00e9 table"] and annotation.is_sentence


@pytest.mark.parametrize(
    "shapes, message",
    [
        ([{"label": "target", "points": [[1, 1], [3, 3]]}], "2 point"),
        ([square(50, 50, 60, 60, "target")], "outside"),
    ],
)
def test_degenerate_polygons_are_reported(tmp_path, shapes, message):
    path = write(tmp_path / "a.json", shapes)
    with pytest.raises(BadAnnotationError, match=message):
        render_mask(load_annotation(path), 10, 10)


def test_not_json_is_reported(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("{not json")
    with pytest.raises(BadAnnotationError, match="a.json"):
        load_annotation(path)
