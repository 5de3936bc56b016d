import json
import logging
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
import torch.utils.data

from tests.utils.data.fake_tree import (
    Box,
    reason_seg_annotation,
    write_image,
    write_llava,
    write_refer,
)
from utils.data import DataConfig, MissingSourceError, build_datasets
from utils.data.bad_samples import SkipReason

TASK_OF_SOURCE = {
    "ade20k": "sem_seg",
    "coco/train2017/0000000": "sem_seg",  # cocostuff (ids < 100000)
    "coco/train2017/0000001": "sem_seg",  # paco_lvis (ids 100000+)
    "mapillary": "sem_seg",
    "pascal_part": "sem_seg",
    "refer_seg": "refer_seg",
    "coco/train2017/0000003": "vqa",  # llava (ids 300000+)
    "reason_seg": "reason_seg",
}


def _task(image_path: str) -> str:
    return next(task for key, task in TASK_OF_SOURCE.items() if key in image_path)


def _build(clip_transform, samples=64, with_validation=True, **flags):
    config = DataConfig(image_size=64, **flags)
    return build_datasets(
        config,
        clip_transform=clip_transform,
        samples_per_epoch=samples,
        with_validation=with_validation,
    )


def test_default_mixture_is_deterministic_per_index(tree, clip_transform):
    train, _ = _build(clip_transform, dataset_dir=str(tree))
    assert len(train) == 64 and set(train.source_sizes()) == {
        "ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary", "refclef", "refcoco",
        "refcoco+", "refcocog", "llava_instruct_150k", "ReasonSeg|train",
    }  # fmt: skip
    forward = [train[i] for i in range(12)]
    backward = [train[i] for i in reversed(range(12))][::-1]
    again, _ = _build(clip_transform, dataset_dir=str(tree))
    for a, b, c in zip(forward, backward, [again[i] for i in range(12)], strict=True):
        assert a.image_path == b.image_path == c.image_path
        assert a.conversations == b.conversations == c.conversations
        assert torch.equal(a.masks, c.masks) and torch.equal(a.image, c.image)
    other_seed, _ = _build(clip_transform, dataset_dir=str(tree), seed=1)
    assert [s.conversations for s in forward] != [other_seed[i].conversations for i in range(12)]
    later = [train[i].conversations for i in range(len(train), len(train) + 12)]  # next epoch
    assert [s.conversations for s in forward] != later


def test_sample_rates_weight_the_tasks(tree, clip_transform):
    train, _ = _build(clip_transform, samples=200, dataset_dir=str(tree), sample_rates="9,3,3,1")
    counts = Counter(_task(train[i].image_path) for i in range(200))
    assert counts["sem_seg"] > counts["refer_seg"] > counts["reason_seg"]
    assert 90 <= counts["sem_seg"] <= 135 and counts["reason_seg"] <= 30
    only_vqa, _ = _build(clip_transform, dataset_dir=str(tree), sample_rates="0,0,1,0")
    assert {_task(only_vqa[i].image_path) for i in range(10)} == {"vqa"}


def test_every_sample_is_well_formed(tree, clip_transform):
    train, _ = _build(clip_transform, dataset_dir=str(tree))
    for i in range(30):
        sample = train[i]
        n_seg = sum(c.count("[SEG]") for c in sample.conversations)
        assert sample.masks.shape[0] == n_seg and sample.masks.dtype == torch.float32
        assert set(sample.masks.unique().tolist()) <= {0.0, 1.0}
        assert sample.label.shape == sample.masks.shape[1:]
        assert all(c.count("<image>") == 1 for c in sample.conversations)
        assert sample.image.shape == (3, *sample.label.shape) and sample.image.dtype == torch.uint8
        assert sample.image_clip.shape == (3, 32, 32)
        assert max(sample.resize) == 64 and not sample.inference


def test_flag_errors_and_missing_sources(tree, tmp_path, clip_transform):
    with pytest.raises(ValueError, match="3 values for the 4 tasks"):
        _build(clip_transform, dataset_dir=str(tree), sample_rates="1,2,3")
    with pytest.raises(ValueError, match="unknown --sem_seg_data entry 'partimagenet'"):
        _build(clip_transform, dataset_dir=str(tree), sem_seg_data="partimagenet")
    shutil.copytree(tree, tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy/mapillary")
    with pytest.raises(MissingSourceError, match=r"copy/mapillary/config_v2\.0\.json"):
        _build(clip_transform, dataset_dir=str(tmp_path / "copy"))


def _damaged_reason_seg(root):
    """Five ReasonSeg images: one good (cp1252 json), four broken in different ways."""
    folder = root / "reason_seg/ReasonSeg/train"
    rng = np.random.default_rng(0)
    box = Box(2, 2, 12, 12)
    for name in ("good", "truncated", "two_points", "outside", "no_image"):
        write_image(folder / f"{name}.jpg", 30, 30, [box], rng)
        annotation = reason_seg_annotation(["the café table"], False, [box])
        if name == "two_points":
            annotation["shapes"][0]["points"] = [[1, 1], [5, 5]]
        if name == "outside":
            annotation["shapes"][0]["points"] = [[100, 100], [120, 100], [120, 120]]
        (folder / f"{name}.json").write_bytes(
            json.dumps(annotation, ensure_ascii=False).encode("cp1252")
        )
    data = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "no_image.jpg").unlink()
    write_image(folder / "no_json.jpg", 30, 30, [box], rng)  # its json is missing
    (folder.parent / "val").mkdir()


def test_bad_samples_are_skipped_counted_and_replaced(tmp_path, clip_transform, caplog):
    _damaged_reason_seg(tmp_path)
    flags = dict(dataset_dir=str(tmp_path), dataset="reason_seg", sample_rates="1", explanatory=-1)
    with caplog.at_level(logging.WARNING, logger="utils.data.bad_samples"):
        train, _ = _build(clip_transform, samples=40, with_validation=False, **flags)
        samples = [train[i] for i in range(40)]
    assert {s.image_path.rsplit("/", 1)[1] for s in samples} == {"good.jpg"}
    assert samples[0].sampled_classes == ["the café table"]  # cp1252 json read
    counts = train.skip_counts()["ReasonSeg|train"]
    assert set(counts) == {
        SkipReason.UNREADABLE_IMAGE.value,
        SkipReason.DEGENERATE_POLYGON.value,
        SkipReason.MISSING_FILE.value,
    }
    assert counts[SkipReason.MISSING_FILE.value] == 2  # no_json.json, no_image.jpg (start-up)
    assert counts[SkipReason.DEGENERATE_POLYGON.value] >= 2  # two points, outside
    assert train.skips.total() > 5  # bad files drawn again are counted again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5 and len(set(warnings)) == 5  # one line per bad file
    assert all("\n" not in w for w in warnings)
    assert any("no_image.jpg" in w for w in warnings) and any(
        "truncated.jpg" in w for w in warnings
    )


def test_skip_counts_include_dataloader_workers(tmp_path, clip_transform):
    _damaged_reason_seg(tmp_path)
    flags = dict(dataset_dir=str(tmp_path), dataset="reason_seg", sample_rates="1", explanatory=-1)
    train, _ = _build(clip_transform, samples=16, with_validation=False, **flags)
    startup = train.skips.total()
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=2, collate_fn=list)
    paths = [s.image_path for batch in loader for s in batch]
    assert len(paths) == 16 and all(p.endswith("good.jpg") for p in paths)
    reference, _ = _build(clip_transform, samples=16, with_validation=False, **flags)
    for i in range(16):
        reference[i]
    assert train.skips.total() - startup == reference.skips.total() - startup > 0


def test_exclude_val_removes_validation_images_from_training(tmp_path, clip_transform):
    rng = np.random.default_rng(0)
    # refCOCO val images 502, 503 are also LLaVA images (same COCO photo, other file name).
    write_refer(tmp_path, "refcoco", "unc", rng, {"train": 2, "val": 2}, (30, 40), first_id=500)
    write_llava(tmp_path, 4, rng, (30, 40), first_id=500)
    flags = dict(
        dataset_dir=str(tmp_path),
        dataset="vqa||refer_seg",
        sample_rates="1,1",
        refer_seg_data="refcoco",
        val_dataset="refcoco|unc|val",
    )
    kept, _ = _build(clip_transform, **flags)
    assert kept.source_sizes() == {"llava_instruct_150k": 4, "refcoco": 2}
    excluded, val = _build(clip_transform, exclude_val=True, **flags)
    assert excluded.source_sizes() == {"llava_instruct_150k": 2, "refcoco": 2}
    seen = {excluded[i].image_path.rsplit("/", 1)[1] for i in range(40)}
    assert "000000000502.jpg" not in seen and "000000000503.jpg" not in seen
    assert val[0].image_keys() == {"coco:502", "coco:503"}
