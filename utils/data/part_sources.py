"""Object-part segmentation in COCO format: PACO-LVIS and PASCAL-Part.

Both are COCO-style json files (images, annotations, categories). A category ``"object:part"``
becomes the pair (object, part), asked about as ``"object part"`` or ``"the part of the object"``
(even odds); a category without ':' is asked about by its name. LVIS-style suffixes such as
``"_(drink_container)"`` are cut, as the original does. Masks come from the annotations'
polygons or RLEs through pycocotools.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.data import layout
from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.coco_masks import decode_segmentation
from utils.data.image_keys import image_key
from utils.data.questions import short_question_turn
from utils.data.sample import Sample
from utils.data.sample_builder import SampleBuilder
from utils.data.source import TrainingSource

ClassName = str | tuple[str, str]  # a name, or (object, part)


def parse_category_name(raw: str) -> ClassName:
    """``"mug:handle"`` -> ("mug", "handle"); ``"bottle_(container)"`` -> "bottle"."""
    pieces = [piece.split("_(")[0] for piece in raw.strip().split(":")]
    if len(pieces) == 2:
        return pieces[0], pieces[1]
    return ":".join(pieces)


def part_phrase(class_name: ClassName, rng: np.random.Generator) -> str:
    """The words a question uses for a class (parts worded two ways, as the original)."""
    if isinstance(class_name, tuple):
        obj, part = class_name
        return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"
    return class_name


@dataclass(frozen=True)
class PartImage:
    path: str
    height: int
    width: int
    annotations: tuple[tuple[int, Any], ...]  # (category id, segmentation), json order


class PartSource(TrainingSource):
    """Images of a COCO-format json, each with its part annotations.

    Args:
        name: ``paco_lvis`` or ``pascal_part``.
        images: the images that have at least one annotation.
        categories: category id -> name or (object, part).
        builder: the shared :class:`SampleBuilder`.
        num_classes_per_sample: most annotations (questions, masks) per sample.
    """

    def __init__(
        self,
        *,
        name: str,
        images: list[PartImage],
        categories: dict[int, ClassName],
        builder: SampleBuilder,
        num_classes_per_sample: int,
    ) -> None:
        if not images:
            raise MissingSourceError(f"{name}: the annotation file lists no annotated image.")
        self.name = name
        self.images = images
        self.categories = categories
        self.builder = builder
        self.num_classes_per_sample = num_classes_per_sample

    def __len__(self) -> int:
        return len(self.images)

    def sample_at(self, index: int, rng: np.random.Generator) -> Sample:
        info = self.images[index]
        annotations = info.annotations
        if len(annotations) > self.num_classes_per_sample:
            chosen = rng.choice(len(annotations), size=self.num_classes_per_sample, replace=False)
            annotations = tuple(annotations[int(i)] for i in chosen)
        image = self.builder.read_image(info.path)
        if image.shape[:2] != (info.height, info.width):
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION,
                f"{info.path}: the json says {info.height}x{info.width}, the image is "
                f"{image.shape[0]}x{image.shape[1]}",
            )
        masks, names, questions, conversations = [], [], [], []
        for category_id, segmentation in annotations:
            if category_id not in self.categories:
                raise BadSampleError(
                    SkipReason.BAD_ANNOTATION, f"{info.path}: unknown category id {category_id}"
                )
            where = f"{self.name} annotation of {info.path}"
            masks.append(decode_segmentation(segmentation, info.height, info.width, where))
            name = part_phrase(self.categories[category_id], rng)
            question, answer = short_question_turn(name, rng, self.builder.answers)
            names.append(name)
            questions.append(question)
            conversations.append(self.builder.conversation([(question, answer)]))
        return self.builder.build(
            image_path=info.path,
            image=image,
            conversations=conversations,
            masks=np.stack(masks),
            questions=questions,
            sampled_classes=names,
        )


def _read_coco_json(
    json_file: Path, image_root: Path, source: str, exclude: Collection[str]
) -> tuple[list[PartImage], dict[int, ClassName]]:
    """Index a COCO-format json once: annotated images (json order) and category names."""
    data = layout.load_json(json_file, source)
    try:
        categories = {int(c["id"]): parse_category_name(c["name"]) for c in data["categories"]}
        by_image: dict[int, list[tuple[int, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(int(ann["image_id"]), []).append(
                (int(ann["category_id"]), ann.get("segmentation"))
            )
        images = []
        for info in data["images"]:
            path = str(image_root / info["file_name"])
            if int(info["id"]) in by_image and image_key(path) not in exclude:
                images.append(
                    PartImage(
                        path=path,
                        height=int(info["height"]),
                        width=int(info["width"]),
                        annotations=tuple(by_image[int(info["id"])]),
                    )
                )
    except (KeyError, TypeError, ValueError) as error:
        raise MissingSourceError(
            f"{source}: {json_file} is not a COCO-format annotation file ({error!r})."
        ) from None
    return images, categories


def paco_lvis_source(
    dataset_dir: Path, builder: SampleBuilder, num_classes_per_sample: int, exclude: Collection[str]
) -> PartSource:
    """PACO-LVIS: ``vlpart/paco/annotations/paco_lvis_v1_train.json``, images under ``coco/``."""
    json_file = layout.require_file(dataset_dir, layout.PACO_LVIS_JSON, "paco_lvis")
    image_root = layout.require_dir(dataset_dir, layout.COCO_ROOT, "paco_lvis")
    images, categories = _read_coco_json(json_file, image_root, "paco_lvis", exclude)
    return PartSource(
        name="paco_lvis",
        images=images,
        categories=categories,
        builder=builder,
        num_classes_per_sample=num_classes_per_sample,
    )


def pascal_part_source(
    dataset_dir: Path, builder: SampleBuilder, num_classes_per_sample: int, exclude: Collection[str]
) -> PartSource:
    """PASCAL-Part: ``vlpart/pascal_part/train.json``, images in VOCdevkit/VOC2010/JPEGImages."""
    json_file = layout.require_file(dataset_dir, layout.PASCAL_PART_JSON, "pascal_part")
    image_root = layout.require_dir(dataset_dir, layout.PASCAL_PART_IMAGES, "pascal_part")
    images, categories = _read_coco_json(json_file, image_root, "pascal_part", exclude)
    return PartSource(
        name="pascal_part",
        images=images,
        categories=categories,
        builder=builder,
        num_classes_per_sample=num_classes_per_sample,
    )


PART_SOURCES: dict[str, Callable[[Path, SampleBuilder, int, Collection[str]], PartSource]] = {
    "paco_lvis": paco_lvis_source,
    "pascal_part": pascal_part_source,
}
