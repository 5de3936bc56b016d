"""Referring segmentation training source: the train split of one REFER-format dataset.

Each sample picks one image, up to ``num_classes_per_sample`` of the expressions of its
references (without replacement), and asks one short question per expression; the answer's
``[SEG]`` is the referred object (for gRefCOCO: the union of the referred objects, or an empty
mask when the expression refers to nothing).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from utils.data import layout
from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.questions import short_question_turn
from utils.data.refer import ReferSplit, load_refer_split
from utils.data.sample import Sample
from utils.data.sample_builder import SampleBuilder
from utils.data.source import TrainingSource


class ReferSegSource(TrainingSource):
    """Training samples of one referring dataset (``refcoco``, ``grefcoco`` ...)."""

    def __init__(
        self, *, refer: ReferSplit, builder: SampleBuilder, num_classes_per_sample: int
    ) -> None:
        if not refer.images:
            raise MissingSourceError(
                f"{refer.dataset}: the {refer.split} split of refs({refer.split_by}) has no image."
            )
        self.name = refer.dataset
        self.refer = refer
        self.image_ids = list(refer.images)
        self.builder = builder
        self.num_classes_per_sample = num_classes_per_sample

    def __len__(self) -> int:
        return len(self.image_ids)

    def sample_at(self, index: int, rng: np.random.Generator) -> Sample:
        image_id = self.image_ids[index]
        info = self.refer.images[image_id]
        expressions = self.refer.expressions[image_id]
        if len(expressions) > self.num_classes_per_sample:
            chosen = rng.choice(len(expressions), size=self.num_classes_per_sample, replace=False)
            expressions = [expressions[int(i)] for i in chosen]
        image = self.builder.read_image(info.path)
        if image.shape[:2] != (info.height, info.width):
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION,
                f"{info.path}: instances.json says {info.height}x{info.width}, the image is "
                f"{image.shape[0]}x{image.shape[1]}",
            )
        texts, questions, conversations, masks = [], [], [], []
        for expression in expressions:
            text = expression.text.strip()
            question, answer = short_question_turn(text, rng, self.builder.answers)
            texts.append(text)
            questions.append(question)
            conversations.append(self.builder.conversation([(question, answer)]))
            masks.append(self.refer.mask(image_id, expression))
        return self.builder.build(
            image_path=info.path,
            image=image,
            conversations=conversations,
            masks=np.stack(masks),
            questions=questions,
            sampled_classes=texts,
        )


def refer_seg_source(
    dataset_dir: Path,
    name: str,
    builder: SampleBuilder,
    num_classes_per_sample: int,
    exclude: Collection[str],
) -> ReferSegSource:
    """The train split of ``name`` with the split-by the original trains it with."""
    if name not in layout.REFER_TRAIN_SPLIT_BY:
        raise ValueError(
            f"unknown --refer_seg_data entry {name!r}; expected some of "
            f"{'||'.join(layout.REFER_TRAIN_SPLIT_BY)}."
        )
    refer = load_refer_split(dataset_dir, name, layout.REFER_TRAIN_SPLIT_BY[name], "train", exclude)
    return ReferSegSource(
        refer=refer, builder=builder, num_classes_per_sample=num_classes_per_sample
    )
