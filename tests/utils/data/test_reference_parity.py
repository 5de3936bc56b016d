"""The validation reader reproduces the inputs of the original's validate() forward."""

import json
import shutil

import numpy as np
import pytest
import torch

from tests.utils.test_collate import BATCH_FIELDS_OF_FIXTURE_KEYS
from utils.collate import collate_fn
from utils.conversation import wrap_image_token
from utils.data import SampleBuilder, ValDataset
from utils.sam_input import sam_encoder_input
from utils.tokenization import load_tokenizer
from utils.transforms import ClipTransform

pytestmark = pytest.mark.reference


def _orange_circle_polygon(points: int = 180) -> list[list[float]]:
    """img3's orange circle (centre y220 x120, radius 60) as a labelme polygon."""
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return [[120 + 60 * np.cos(a), 220 + 60 * np.sin(a)] for a in angles]


@pytest.fixture
def img3_as_reason_seg(tmp_path, tiny_cases_dir):
    """tiny_cases/img3 as a one-image ReasonSeg val split (PNG bytes under the .jpg name the
    reader lists, so the pixels stay exact)."""
    folder = tmp_path / "reason_seg/ReasonSeg/val"
    folder.mkdir(parents=True)
    shutil.copy(tiny_cases_dir / "img3.png", folder / "img3.jpg")
    shapes = [{"label": "target", "points": _orange_circle_polygon(), "shape_type": "polygon"}]
    annotation = {"text": ["the orange circle"], "is_sentence": False, "shapes": shapes}
    (folder / "img3.json").write_text(json.dumps(annotation))
    return tmp_path


def test_val_sample_matches_inference_forward(img3_as_reason_seg, tiny_lisa_dir, tiny_cases_dir):
    record = json.loads((tiny_cases_dir / "inference_forward.json").read_text())
    arrays = np.load(tiny_cases_dir / "inference_forward.npz")
    preprocess = np.load(tiny_cases_dir / "preprocess_img3.npz")
    builder = SampleBuilder(
        clip_transform=ClipTransform.from_pretrained(tiny_lisa_dir / "clip"),
        image_size=1024,
        conv_template="llava_v1",
    )
    sample = ValDataset(img3_as_reason_seg, "ReasonSeg|val", builder)[0]

    assert [wrap_image_token(c, True) for c in sample.conversations] == record["conversation_list"]
    assert list(sample.resize) == record["resize_list"][0]
    assert torch.allclose(sample.image_clip, torch.from_numpy(arrays["images_clip"][0]), atol=1e-5)
    assert sample.image.dtype == torch.uint8
    sam_input = sam_encoder_input(
        sample.image[None], [sample.original_size], [sample.resize], side=1024
    )[0]
    assert torch.equal(sam_input, torch.from_numpy(preprocess["sam_input"][0]))
    gt = torch.from_numpy(arrays["gt_masks"]).bool()  # [1, 320, 213]
    assert sample.masks.shape == gt.shape
    polygon = sample.masks.bool()
    assert (polygon & gt).sum() / (polygon | gt).sum() > 0.97  # a polygon, not the exact disc

    tokenizer = load_tokenizer(tiny_lisa_dir)
    batch = collate_fn([sample], tokenizer, conv_type="llava_v1", use_mm_start_end=True)
    assert sample.inference is True
    for field, key in BATCH_FIELDS_OF_FIXTURE_KEYS.items():
        assert torch.equal(getattr(batch, field), torch.from_numpy(arrays[key])), key
    assert batch.conversations == record["conversation_list"]
