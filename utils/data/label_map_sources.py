"""Semantic segmentation from class-index PNGs: ADE20K, COCO-Stuff and Mapillary Vistas v2.0.

Each sample picks one image, up to ``num_classes_per_sample`` of the classes present in its label
map, and asks one short question per class; the mask of a class is ``label == class id``. Label
values are made class ids as the original does:

* ADE20K: 0 ("other") becomes 255 (ignored), 1..150 become 0..149 (``ade20k_classes.txt``).
* COCO-Stuff (stuffthingmaps): values are ids into ``cocostuff_classes.txt`` (182 names); the
  classes with a '-' in their name ("wall-other", "desk-stuff", ...) are set to 255, 255 stays.
* Mapillary: values index the ``labels`` of ``config_v2.0.json`` (``readable`` names,
  lower-cased).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.data import layout
from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.image_keys import image_key
from utils.data.questions import short_question_turn
from utils.data.sample import Sample
from utils.data.sample_builder import SampleBuilder
from utils.data.source import TrainingSource
from utils.regular_files import is_regular_file

IGNORE_LABEL = 255
_CLASS_LISTS = Path(__file__).resolve().parent


def read_class_names(file_name: str) -> list[str]:
    """A class list shipped beside this module: one name per line, line i = class id i."""
    return (_CLASS_LISTS / file_name).read_text(encoding="utf-8").splitlines()


class LabelMapSource(TrainingSource):
    """Images with a single-channel PNG of class indices each.

    Args:
        name: source name (``ade20k``, ``cocostuff``, ``mapillary``).
        items: (image path, label path) pairs.
        class_names: class id -> name.
        label_lut: uint8 [256] mapping a stored label value to a class id or 255 (ignore).
        builder: the shared :class:`SampleBuilder`.
        num_classes_per_sample: most classes (questions, masks) per sample.
    """

    def __init__(
        self,
        *,
        name: str,
        items: list[tuple[str, str]],
        class_names: list[str],
        label_lut: np.ndarray,
        builder: SampleBuilder,
        num_classes_per_sample: int,
    ) -> None:
        if not items:
            raise MissingSourceError(f"{name}: found no image with a label map.")
        self.name = name
        self.items = items
        self.class_names = class_names
        self.label_lut = label_lut
        self.builder = builder
        self.num_classes_per_sample = num_classes_per_sample

    def __len__(self) -> int:
        return len(self.items)

    def read_label(self, path: str) -> np.ndarray:
        """[H, W] uint8 class ids (255 = ignore) of one label PNG."""
        if not os.path.isfile(path):
            raise BadSampleError(SkipReason.MISSING_FILE, f"label map {path!r} does not exist")
        try:
            with Image.open(path) as image:
                stored = np.asarray(image)
        except (
            UnidentifiedImageError,
            Image.DecompressionBombError,  # more pixels than an image may have
            OSError,
            SyntaxError,
            ValueError,
        ) as error:
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION, f"cannot read label map {path!r}: {error}"
            ) from error
        if stored.ndim != 2:
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION, f"label map {path!r} is not single-channel"
            )
        if stored.dtype != np.uint8:
            if stored.size and (stored.min() < 0 or stored.max() > 255):
                raise BadSampleError(
                    SkipReason.BAD_ANNOTATION, f"label map {path!r} has values beyond 255"
                )
            stored = stored.astype(np.uint8)
        return self.label_lut[stored]

    def sample_at(self, index: int, rng: np.random.Generator) -> Sample:
        image_path, label_path = self.items[index]
        label = self.read_label(label_path)
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
        present = present[present != IGNORE_LABEL]
        if present.size == 0:
            raise BadSampleError(SkipReason.NO_TARGET, f"{label_path}: no labelled class")
        if present[-1] >= len(self.class_names):
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION,
                f"{label_path}: value {int(present[-1])} but {len(self.class_names)} classes",
            )
        image = self.builder.read_image(image_path)
        if image.shape[:2] != label.shape:
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION,
                f"{label_path}: label map {label.shape} and image {image.shape[:2]} differ in size",
            )
        if present.size > self.num_classes_per_sample:
            present = rng.choice(present, size=self.num_classes_per_sample, replace=False)
        names = [self.class_names[class_id] for class_id in present]
        questions, conversations = [], []
        for class_name in names:
            question, answer = short_question_turn(class_name, rng, self.builder.answers)
            questions.append(question)
            conversations.append(self.builder.conversation([(question, answer)]))
        masks = label[None, :, :] == present.astype(np.uint8)[:, None, None]  # [n, H, W]
        return self.builder.build(
            image_path=image_path,
            image=image,
            conversations=conversations,
            masks=masks,
            label=label,
            questions=questions,
            sampled_classes=names,
        )


def _files_by_stem(folder: Path, suffix: str) -> dict[str, str]:
    """{stem: path} of the files with ``suffix`` directly in ``folder``."""
    with os.scandir(folder) as entries:
        return {
            entry.name[: -len(suffix)]: entry.path
            for entry in entries
            if entry.name.endswith(suffix) and is_regular_file(entry.path)  # no FIFO, no loop
        }


def _paired(
    stems_from: dict[str, str], partner_dir: Path, partner_suffix: str, image_first: bool
) -> list[tuple[str, str]]:
    """(image, label) pairs in sorted stem order; the partner file is looked up per sample."""
    pairs = []
    for stem in sorted(stems_from):
        partner = str(partner_dir / f"{stem}{partner_suffix}")
        pairs.append((stems_from[stem], partner) if image_first else (partner, stems_from[stem]))
    return pairs


def _without(items: list[tuple[str, str]], exclude: Collection[str]) -> list[tuple[str, str]]:
    return [item for item in items if image_key(item[0]) not in exclude] if exclude else items


def ade20k_source(
    dataset_dir: Path, builder: SampleBuilder, num_classes_per_sample: int, exclude: Collection[str]
) -> LabelMapSource:
    """ADE20K: every ``images/training/*.jpg`` with its ``annotations/training/*.png``."""
    images = layout.require_dir(dataset_dir, layout.ADE20K_IMAGES, "ade20k")
    labels = layout.require_dir(dataset_dir, layout.ADE20K_ANNOTATIONS, "ade20k")
    items = _paired(_files_by_stem(images, ".jpg"), labels, ".png", image_first=True)
    lut = np.arange(256, dtype=np.int64) - 1
    lut[0] = lut[255] = IGNORE_LABEL  # 0 is "other"; 255 would wrap to 254
    return LabelMapSource(
        name="ade20k",
        items=_without(items, exclude),
        class_names=read_class_names("ade20k_classes.txt"),
        label_lut=lut.astype(np.uint8),
        builder=builder,
        num_classes_per_sample=num_classes_per_sample,
    )


def cocostuff_source(
    dataset_dir: Path, builder: SampleBuilder, num_classes_per_sample: int, exclude: Collection[str]
) -> LabelMapSource:
    """COCO-Stuff: every ``cocostuff/train2017/*.png`` with ``coco/train2017/<stem>.jpg``."""
    labels = layout.require_dir(dataset_dir, layout.COCOSTUFF_LABELS, "cocostuff")
    images = layout.require_dir(dataset_dir, layout.COCO_TRAIN2017, "cocostuff")
    items = _paired(_files_by_stem(labels, ".png"), images, ".jpg", image_first=False)
    class_names = read_class_names("cocostuff_classes.txt")
    lut = np.arange(256, dtype=np.uint8)
    for class_id, class_name in enumerate(class_names):
        if "-" in class_name:  # the original trains only on the classes without a '-'
            lut[class_id] = IGNORE_LABEL
    return LabelMapSource(
        name="cocostuff",
        items=_without(items, exclude),
        class_names=class_names,
        label_lut=lut,
        builder=builder,
        num_classes_per_sample=num_classes_per_sample,
    )


def mapillary_source(
    dataset_dir: Path, builder: SampleBuilder, num_classes_per_sample: int, exclude: Collection[str]
) -> LabelMapSource:
    """Mapillary Vistas v2.0: ``training/v2.0/labels/*.png`` with ``training/images/<stem>.jpg``."""
    config_file = layout.require_file(dataset_dir, layout.MAPILLARY_CONFIG, "mapillary")
    config = layout.load_json(config_file, "mapillary")
    try:
        class_names = [str(label["readable"]).lower() for label in config["labels"]]
    except (KeyError, TypeError) as error:
        raise MissingSourceError(
            f"mapillary: {config_file} has no 'labels' list with 'readable' names ({error})."
        ) from None
    labels = layout.require_dir(dataset_dir, layout.MAPILLARY_LABELS, "mapillary")
    images = dataset_dir / layout.MAPILLARY_IMAGES
    items = _paired(_files_by_stem(labels, ".png"), images, ".jpg", image_first=False)
    return LabelMapSource(
        name="mapillary",
        items=_without(items, exclude),
        class_names=class_names,
        label_lut=np.arange(256, dtype=np.uint8),
        builder=builder,
        num_classes_per_sample=num_classes_per_sample,
    )


LABEL_MAP_SOURCES: dict[
    str, Callable[[Path, SampleBuilder, int, Collection[str]], LabelMapSource]
] = {
    "ade20k": ade20k_source,
    "cocostuff": cocostuff_source,
    "mapillary": mapillary_source,
}
