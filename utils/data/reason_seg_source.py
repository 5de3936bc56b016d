"""Reasoning segmentation training source: ReasonSeg images with their query json files.

``reason_seg/<name>/<split>/*.jpg`` each with a ``.json`` of the same stem (see
:mod:`utils.reason_seg`); ``--reason_seg_data "ReasonSeg|train"`` (splits joined by '_', e.g.
``train_val``). Each sample asks up to ``num_classes_per_sample`` of the image's queries, all
answered by the same target mask: sentence queries (``is_sentence``) with the long templates,
others with the short ones.

Explanations (``reason_seg/<name>/explanatory/train.json``, a list of ``{"image", "query",
"outputs"}``): unless ``explanatory`` is -1, for an image that has one the sample is, for all its
queries, with probability ``explanatory`` a plain text answer (the explanation, no mask), else
with even odds a plain ``[SEG]`` answer or a ``[SEG]`` answer followed by the explanation (the
question then being the query plus an "explain" request). This is the original's scheme, so
``explanatory=0`` still gives explained ``[SEG]`` answers half of the time.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from enum import Enum
from pathlib import Path

import numpy as np

from utils.constants import DEFAULT_IMAGE_TOKEN
from utils.data import layout
from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.image_keys import image_key
from utils.data.questions import (
    EXPLANATORY_QUESTION_LIST,
    choose,
    segmentation_questions,
)
from utils.data.sample import Sample
from utils.data.sample_builder import SampleBuilder
from utils.data.source import TrainingSource
from utils.reason_seg import (
    TARGET_VALUE,
    BadAnnotationError,
    ReasonSegAnnotation,
    load_annotation,
    render_mask,
)
from utils.regular_files import is_regular_file

NO_EXPLANATION = -1.0  # --explanatory value that disables explanations


class AnswerKind(Enum):
    """How one ReasonSeg sample is answered (the original's choice 0, 1, 2)."""

    SEG = 0  # "Sure, [SEG]."
    SEG_AND_EXPLANATION = 1  # "Sure, [SEG]. <explanation>" to a question asking for a reason
    EXPLANATION_ONLY = 2  # "<explanation>" to the bare query, no mask


def list_reason_seg_split(
    dataset_dir: Path, name: str, split: str
) -> tuple[list[tuple[str, ReasonSegAnnotation]], list[BadSampleError]]:
    """(image path, parsed annotation) of every ``*.jpg`` in one split, sorted by file name.

    Images whose json is absent or malformed, and jsons without their image, are left out and
    returned as errors (reported as skipped samples by the caller).

    Raises:
        MissingSourceError: the split folder does not exist.
    """
    folder = layout.require_dir(
        dataset_dir, f"{layout.REASON_SEG_ROOT}/{name}/{split}", f"{name}|{split}"
    )
    with os.scandir(folder) as entries:
        # regular files only (never a FIFO); a loop of links is left out instead of raising
        names = {e.name for e in entries if is_regular_file(e.path)}
    items, errors = [], []
    for json_name in sorted(n for n in names if n.endswith(".json")):
        image_name = json_name[: -len(".json")] + ".jpg"
        if image_name not in names:
            message = f"image {str(folder / image_name)!r} of {json_name} does not exist"
            errors.append(BadSampleError(SkipReason.MISSING_FILE, message))
    for image_name in sorted(n for n in names if n.endswith(".jpg")):
        image_path = str(folder / image_name)
        json_path = image_path[: -len(".jpg")] + ".json"
        if image_name[: -len(".jpg")] + ".json" not in names:
            message = f"annotation {json_path!r} does not exist"
            errors.append(BadSampleError(SkipReason.MISSING_FILE, message))
            continue
        try:
            annotation = load_annotation(json_path)
        except BadAnnotationError as error:
            errors.append(BadSampleError(SkipReason.BAD_ANNOTATION, str(error)))
            continue
        if not annotation.texts:
            errors.append(
                BadSampleError(SkipReason.BAD_ANNOTATION, f"{json_path}: no 'text' query")
            )
            continue
        items.append((image_path, annotation))
    return items, errors


def render_reason_seg_mask(annotation: ReasonSegAnnotation, height: int, width: int) -> np.ndarray:
    """[H, W] uint8 0 / 1 (target) / 255 (ignore); degenerate polygons raise BadSampleError."""
    try:
        return render_mask(annotation, height, width)
    except BadAnnotationError as error:
        raise BadSampleError(SkipReason.DEGENERATE_POLYGON, str(error)) from error


def load_explanations(dataset_dir: Path, name: str) -> dict[str, str]:
    """{image file name: explanation text} from ``reason_seg/<name>/explanatory/train.json``."""
    source = f"{name} explanatory"
    json_file = layout.require_file(dataset_dir, layout.explanatory_file(name), source)
    items = layout.load_json(json_file, source)
    try:
        return {str(item["image"]): str(item["outputs"]) for item in items}
    except (KeyError, TypeError) as error:
        raise MissingSourceError(
            f"{source}: {json_file} is not a list of {{image, query, outputs}} ({error!r}); "
            "pass --explanatory -1 to train without explanations."
        ) from None


class ReasonSegSource(TrainingSource):
    """ReasonSeg training samples (``--reason_seg_data``, ``--explanatory``)."""

    def __init__(
        self,
        *,
        name: str,
        items: list[tuple[str, ReasonSegAnnotation]],
        explanations: dict[str, str],
        explanatory: float,
        builder: SampleBuilder,
        num_classes_per_sample: int,
        startup_skips: list[BadSampleError] | None = None,
    ) -> None:
        if not items:
            raise MissingSourceError(f"{name}: found no image with a usable annotation.")
        self.name = name
        self.items = items
        self.explanations = explanations
        self.explanatory = explanatory
        self.builder = builder
        self.num_classes_per_sample = num_classes_per_sample
        self.startup_skips = startup_skips or []  # files left out while indexing

    def __len__(self) -> int:
        return len(self.items)

    def _answer_kind(self, image_path: str, rng: np.random.Generator) -> tuple[AnswerKind, str]:
        """How this sample is answered, and the image's explanation ("" when none)."""
        explanation = self.explanations.get(os.path.basename(image_path))
        if self.explanatory == NO_EXPLANATION or explanation is None:
            return AnswerKind.SEG, ""
        if rng.random() < self.explanatory:
            return AnswerKind.EXPLANATION_ONLY, explanation
        return AnswerKind(int(rng.integers(2))), explanation

    def sample_at(self, index: int, rng: np.random.Generator) -> Sample:
        image_path, annotation = self.items[index]
        image = self.builder.read_image(image_path)
        height, width = image.shape[:2]
        mask = render_reason_seg_mask(annotation, height, width)
        texts = annotation.texts
        if len(texts) > self.num_classes_per_sample:
            chosen = rng.choice(len(texts), size=self.num_classes_per_sample, replace=False)
            texts = [texts[int(i)] for i in chosen]
        kind, explanation = self._answer_kind(image_path, rng)
        questions, conversations = [], []
        for text in texts:
            question = choose(segmentation_questions(text, annotation.is_sentence), rng)
            if kind == AnswerKind.SEG:
                answer = choose(self.builder.answers, rng)
            elif kind == AnswerKind.SEG_AND_EXPLANATION:
                answer = f"{choose(self.builder.answers, rng)} {explanation}"
                question = f"{DEFAULT_IMAGE_TOKEN}\n{text} {choose(EXPLANATORY_QUESTION_LIST, rng)}"
            else:
                question, answer = f"{DEFAULT_IMAGE_TOKEN}\n{text}", explanation
            questions.append(question)
            conversations.append(self.builder.conversation([(question, answer)]))
        if kind == AnswerKind.EXPLANATION_ONLY:
            masks = np.zeros((0, height, width), dtype=bool)
        else:
            masks = np.repeat((mask == TARGET_VALUE)[None], len(texts), axis=0)  # [n, H, W]
        return self.builder.build(
            image_path=image_path,
            image=image,
            conversations=conversations,
            masks=masks,
            questions=questions,
            sampled_classes=list(texts),
        )


def reason_seg_source(
    dataset_dir: Path,
    reason_seg_data: str,
    builder: SampleBuilder,
    num_classes_per_sample: int,
    explanatory: float,
    exclude: Collection[str],
) -> ReasonSegSource:
    """The source named by ``--reason_seg_data`` (``"ReasonSeg|train"``, ``"ReasonSeg|train_val"``).

    Raises:
        MissingSourceError: a split folder or the explanatory file (unless disabled) is absent.
        ValueError: a malformed name or ``explanatory`` value.
    """
    name, _, splits = reason_seg_data.partition("|")
    if not name or not splits:
        raise ValueError(
            f"--reason_seg_data {reason_seg_data!r} is not of the form NAME|SPLIT[_SPLIT...]."
        )
    if explanatory != NO_EXPLANATION and not 0.0 <= explanatory <= 1.0:
        raise ValueError(f"--explanatory must be -1 or within [0, 1], got {explanatory}.")
    items, errors = [], []
    for split in splits.split("_"):
        split_items, split_errors = list_reason_seg_split(dataset_dir, name, split)
        items.extend(item for item in split_items if image_key(item[0]) not in exclude)
        errors.extend(split_errors)
    explanations = {} if explanatory == NO_EXPLANATION else load_explanations(dataset_dir, name)
    return ReasonSegSource(
        name=reason_seg_data,
        items=items,
        explanations=explanations,
        explanatory=explanatory,
        builder=builder,
        num_classes_per_sample=num_classes_per_sample,
        startup_skips=errors,
    )
