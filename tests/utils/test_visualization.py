"""Mask pictures as the original chat.py writes them, and COCO RLE."""

import cv2
import numpy as np
import pytest

from utils.mask_rle import decode_rle, encode_rle
from utils.visualization import overlay_mask, save_mask_pictures


def test_overlay_blends_half_red_into_the_mask_and_truncates_like_numpy():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[0, 0] = (201, 100, 3)
    image[1, 1] = (255, 255, 255)
    mask = np.array([[True, False], [False, True]])
    result = overlay_mask(image, mask)
    assert result[0, 0].tolist() == [228, 50, 1]  # 100.5 + 127.5, 50, 1.5 -> truncated
    assert result[1, 1].tolist() == [255, 127, 127]
    assert result[0, 1].tolist() == [0, 0, 0] and result[1, 0].tolist() == [0, 0, 0]


def test_every_mask_is_saved_with_the_original_names(tmp_path):
    image = np.full((30, 40, 3), 200, dtype=np.uint8)
    first = np.zeros((30, 40), dtype=bool)
    first[5:20, 5:25] = True
    second = ~first
    files = save_mask_pictures(image, [first, second], tmp_path / "vis", "photo", first_index=2)
    assert [f.mask_path.name for f in files] == ["photo_mask_2.jpg", "photo_mask_3.jpg"]
    assert [f.overlay_path.name for f in files] == [
        "photo_masked_img_2.jpg",
        "photo_masked_img_3.jpg",
    ]
    saved_mask = cv2.imread(str(files[0].mask_path), cv2.IMREAD_GRAYSCALE)
    assert saved_mask.shape == (30, 40)
    assert abs(int(saved_mask[10, 10]) - 100) <= 3 and int(saved_mask[28, 38]) <= 3  # mask * 100
    overlay = cv2.cvtColor(cv2.imread(str(files[0].overlay_path)), cv2.COLOR_BGR2RGB)
    assert np.abs(overlay[10, 10].astype(int) - [227, 100, 100]).max() <= 8  # reddened (JPEG)
    assert np.abs(overlay[28, 38].astype(int) - [200, 200, 200]).max() <= 4  # untouched


def test_overlay_refuses_a_mask_of_another_size():
    with pytest.raises(ValueError, match="does not match"):
        overlay_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), bool))


def test_rle_round_trip():
    mask = np.zeros((7, 5), dtype=bool)
    mask[1:4, 2:5] = True
    mask[6, 0] = True
    rle = encode_rle(mask)
    assert rle["size"] == [7, 5] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_rle(rle), mask)
