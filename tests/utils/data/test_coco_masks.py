import numpy as np
import pytest
from pycocotools import mask as coco_mask

from utils.data.bad_samples import BadSampleError, SkipReason
from utils.data.coco_masks import decode_segmentation


def _expected(height=10, width=12):
    mask = np.zeros((height, width), np.uint8)
    mask[2:6, 3:9] = 1
    return mask


def test_polygons_rles_and_empty():
    expected = _expected()
    polygon = [[3.0, 2.0, 9.0, 2.0, 9.0, 6.0, 3.0, 6.0]]  # edges on pixel borders
    assert np.array_equal(decode_segmentation(polygon, 10, 12, "t"), expected)
    compressed = coco_mask.encode(np.asfortranarray(expected))
    as_text = {"size": [10, 12], "counts": compressed["counts"].decode("ascii")}
    assert np.array_equal(decode_segmentation(as_text, 10, 12, "t"), expected)
    assert np.array_equal(decode_segmentation([compressed], 10, 12, "t"), expected)
    column_major = expected.ravel(order="F")
    runs, value, count = [], 0, 0
    for pixel in column_major:
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    uncompressed = {"size": [10, 12], "counts": runs}
    assert np.array_equal(decode_segmentation(uncompressed, 10, 12, "t"), expected)
    assert not decode_segmentation([], 10, 12, "t").any()


def test_two_polygons_are_united():
    parts = [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0], [5.0, 5.0, 7.0, 5.0, 7.0, 7.0, 5.0, 7.0]]
    mask = decode_segmentation(parts, 10, 12, "t")
    assert mask.max() == 1 and mask[1, 1] == 1 and mask[6, 6] == 1 and mask[4, 4] == 0


@pytest.mark.parametrize(
    ("segmentation", "reason"),
    [
        ([[1.0, 2.0, 3.0, 4.0]], SkipReason.DEGENERATE_POLYGON),
        ([[50.0, 50.0, 60.0, 50.0, 60.0, 60.0]], SkipReason.DEGENERATE_POLYGON),
        ({"size": [3, 3], "counts": "abc"}, SkipReason.BAD_ANNOTATION),
        ("polygon", SkipReason.BAD_ANNOTATION),
        (
            [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], {"size": [10, 12], "counts": "0"}],
            SkipReason.BAD_ANNOTATION,
        ),
    ],
)
def test_malformed_segmentations_are_sample_errors(segmentation, reason):
    with pytest.raises(BadSampleError) as error:
        decode_segmentation(segmentation, 10, 12, "where")
    assert error.value.reason == reason and "where" in str(error.value)
