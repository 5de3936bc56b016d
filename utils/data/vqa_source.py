"""Visual question answering: LLaVA-Instruct conversations about COCO train2017 images.

``llava_dataset/<name>.json`` is a list of ``{"image": "000000033471.jpg", "conversations":
[{"from": "human", "value": "<image>\\nWhat ..."}, {"from": "gpt", "value": "..."}, ...]}``.
As in the original, the ``<image>`` placeholder is moved to the front of its message followed by
a newline, a leading non-human turn is dropped, and the whole conversation becomes one
multi-round conversation with no mask.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from utils.constants import DEFAULT_IMAGE_TOKEN
from utils.data import layout
from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.image_keys import image_key
from utils.data.sample import Sample
from utils.data.sample_builder import SampleBuilder
from utils.data.source import TrainingSource

_ROLES = ("human", "gpt")


def _turns(item: dict, where: str) -> list[tuple[str, str]]:
    """(user message, answer) pairs of one LLaVA-Instruct item."""
    try:
        messages = [(str(m["from"]), str(m["value"])) for m in item["conversations"]]
    except (KeyError, TypeError) as error:
        raise BadSampleError(
            SkipReason.BAD_ANNOTATION, f"{where}: malformed conversations ({error!r})"
        ) from error
    if messages and messages[0][0] != _ROLES[0]:
        messages = messages[1:]  # the original skips a leading non-human turn
    texts = []
    for index, (role, value) in enumerate(messages):
        if role != _ROLES[index % 2]:
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION,
                f"{where}: turn {index} is from {role!r}, not alternating",
            )
        if DEFAULT_IMAGE_TOKEN in value:
            value = (
                DEFAULT_IMAGE_TOKEN + "\n" + value.replace(DEFAULT_IMAGE_TOKEN, "").strip()
            ).strip()
        texts.append(value)
    if not texts or len(texts) % 2:
        raise BadSampleError(
            SkipReason.BAD_ANNOTATION,
            f"{where}: {len(texts)} turns, expected question/answer pairs",
        )
    if sum(text.count(DEFAULT_IMAGE_TOKEN) for text in texts) != 1:
        raise BadSampleError(
            SkipReason.BAD_ANNOTATION, f"{where}: expected exactly one {DEFAULT_IMAGE_TOKEN}"
        )
    return list(zip(texts[0::2], texts[1::2], strict=True))


class VqaSource(TrainingSource):
    """One LLaVA-Instruct json file (``--vqa_data``), images in ``coco/train2017``."""

    def __init__(
        self, *, name: str, items: list[dict], image_dir: Path, builder: SampleBuilder
    ) -> None:
        if not items:
            raise MissingSourceError(f"{name}: the json lists no conversation.")
        self.name = name
        self.items = items
        self.image_dir = image_dir
        self.builder = builder

    def __len__(self) -> int:
        return len(self.items)

    def sample_at(self, index: int, rng: np.random.Generator) -> Sample:
        item = self.items[index]
        where = f"{self.name} item {index}"
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise BadSampleError(SkipReason.BAD_ANNOTATION, f"{where}: no 'image' file name")
        turns = _turns(item, where)
        image_path = self.image_dir / item["image"]
        image = self.builder.read_image(image_path)
        conversation = self.builder.conversation(turns)
        height, width = image.shape[:2]
        return self.builder.build(
            image_path=image_path,
            image=image,
            conversations=[conversation],
            masks=np.zeros((0, height, width), dtype=np.uint8),
            questions=[conversation],
            sampled_classes=[conversation],
        )


def vqa_source(
    dataset_dir: Path, name: str, builder: SampleBuilder, exclude: Collection[str]
) -> VqaSource:
    """``llava_dataset/<name>.json`` with its images in ``coco/train2017``."""
    json_file = layout.require_file(dataset_dir, f"{layout.LLAVA_DIR}/{name}.json", name)
    image_dir = layout.require_dir(dataset_dir, layout.COCO_TRAIN2017, name)
    items = layout.load_json(json_file, name)
    if not isinstance(items, list):
        raise MissingSourceError(f"{name}: {json_file} is not a list of conversations.")
    if exclude:
        items = [
            item
            for item in items
            if not (isinstance(item, dict) and image_key(str(item.get("image", ""))) in exclude)
        ]
    return VqaSource(name=name, items=items, image_dir=image_dir, builder=builder)
