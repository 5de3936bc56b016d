"""Malformed ReasonSeg annotations in a dataset folder: utils.check_dataset names the first one
(file and reason) for the training and the validation split, and the training dataset skips and
counts every one of them, drawing only good samples."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from utils.check_dataset import main
from utils.data.build import DataConfig, build_train_dataset
from utils.data.sample_builder import SampleBuilder
from utils.transforms import ClipTransform

from .broken_files import BAD_ANNOTATIONS, annotation, link_loop, snapshot

REASON_SEG_FLAGS = [
    "--dataset=reason_seg",
    "--sample_rates=1",
    "--reason_seg_data=ReasonSeg|train",
    "--val_dataset=ReasonSeg|val",
    "--explanatory=-1",
]


def write_split(folder: Path, bad: dict[str, str]) -> None:
    """good.jpg/json, and bad_<i>.jpg with each json text of ``bad``."""
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 6), (90, 90, 90)).save(folder / "good.jpg")
    (folder / "good.json").write_text(json.dumps(annotation()))
    for stem, text in bad.items():
        shutil.copy(folder / "good.jpg", folder / f"{stem}.jpg")
        (folder / f"{stem}.json").write_text(text)


@pytest.mark.parametrize("name", list(BAD_ANNOTATIONS))
def test_check_dataset_names_the_malformed_annotation(tmp_path, capsys, name):
    text, piece = BAD_ANNOTATIONS[name]
    root = tmp_path / "dataset"
    for split in ("train", "val"):
        write_split(root / "reason_seg" / "ReasonSeg" / split, {"bad": text})
    before = snapshot(root)
    code = main([f"--dataset_dir={root}", *REASON_SEG_FLAGS])
    out, err = capsys.readouterr()
    assert code == 0, out  # the good image keeps both splits usable
    assert "Traceback" not in out + err
    malformed = [line.strip() for line in out.splitlines() if "first malformed:" in line]
    assert len(malformed) == 2, out  # one line per split, naming the file and the reason
    for line, split in zip(malformed, ("train", "val"), strict=True):
        assert f"{root}/reason_seg/ReasonSeg/{split}/bad.json" in line and piece in line, line
        assert line.endswith("(bad_annotation)"), line
    assert "2 of 2 requested sources can be used" in out
    assert snapshot(root) == before


def test_training_skips_and_counts_every_malformed_annotation(tmp_path):
    root = tmp_path / "dataset"
    bad = {f"bad_{i}": text for i, (text, _) in enumerate(BAD_ANNOTATIONS.values())}
    train = root / "reason_seg" / "ReasonSeg" / "train"
    write_split(train, bad)
    link_loop(train / "loop.jpg")  # its annotation's image counts as missing, not a crash
    (train / "loop.json").write_text(json.dumps(annotation()))
    config = DataConfig(
        dataset_dir=str(root),
        dataset="reason_seg",
        sample_rates="1",
        reason_seg_data="ReasonSeg|train",
        explanatory=-1,
    )
    builder = SampleBuilder(
        clip_transform=ClipTransform(shortest_edge=8, crop_size=(8, 8)),
        image_size=8,
        conv_template="llava_v1",
    )
    dataset = build_train_dataset(config, builder, samples_per_epoch=4)
    assert dataset.skip_counts() == {
        "ReasonSeg|train": {"bad_annotation": len(BAD_ANNOTATIONS), "missing_file": 1}
    }
    assert dataset.source_sizes() == {"ReasonSeg|train": 1}
    for index in range(len(dataset)):
        assert dataset[index].image_path.endswith("good.jpg")
