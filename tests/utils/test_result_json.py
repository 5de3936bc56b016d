"""The JSON result of chat.py --output_json and of the web demo's download."""

import json

import numpy as np
import pytest

from utils.mask_rle import decode_rle
from utils.result_json import result_document, write_json


def masks():
    first = np.zeros((5, 7), dtype=bool)
    first[1:3, 2:6] = True
    return [first, ~first]


def test_one_entry_per_mask_with_area_size_and_rle_when_asked():
    document = result_document(
        prompt="你好, 2 dogs?",
        image="dog.png",
        answer="[SEG] and [SEG].",
        masks=masks(),
        mask_paths=["m0.png", "m1.png"],
        overlay_paths=["o.png", "o.png"],
        rle=True,
    )
    assert set(document) == {"prompt", "image", "answer", "masks"}
    assert [entry["area"] for entry in document["masks"]] == [8, 27]
    assert all(entry["size"] == [5, 7] for entry in document["masks"])
    for entry, mask in zip(document["masks"], masks(), strict=True):
        assert (decode_rle(entry["rle"]) == mask).all()
    plain = result_document(
        prompt="p",
        image="i",
        answer="a",
        masks=masks()[:1],
        mask_paths=["m"],
        overlay_paths=["o"],
        rle=False,
    )
    assert set(plain["masks"][0]) == {"mask_path", "overlay_path", "area", "size"}


def test_paths_must_match_the_masks():
    with pytest.raises(ValueError, match="2 masks need as many"):
        result_document(
            prompt="p",
            image="i",
            answer="a",
            masks=masks(),
            mask_paths=["m"],
            overlay_paths=["o"],
            rle=False,
        )


def test_written_as_utf8_without_a_temporary_file_left(tmp_path):
    path = tmp_path / "out" / "result.json"
    write_json(path, {"prompt": "猫 🐱"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"prompt": "猫 🐱"}
    assert "猫" in path.read_text(encoding="utf-8")  # not escaped
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]
