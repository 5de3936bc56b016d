"""Validation sets, named as the original names them.

* ``"ReasonSeg|val"``, ``"ReasonSeg|test"``: one item per image of ``reason_seg/ReasonSeg/<split>``,
  asking its first query; the ground truth keeps 255 where the annotation says "ignore", so the
  metrics leave those pixels out.
* ``"refcoco|unc|val"``, ``"refcoco+|unc|testA"``, ``"refcocog|umd|test"``,
  ``"grefcoco|unc|val"``, ...: one item per image with every expression of the split's
  references about it (several targets per image); no-target gRefCOCO expressions get an empty
  mask.

Questions are written exactly as the original ValDataset writes them, including the space after
the newline (:func:`utils.data.questions.validation_question`); expressions are stripped and
lower-cased, ReasonSeg queries only stripped. Items are in sorted file / image-id order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.utils.data

from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipCounter, SkipReason
from utils.data.image_keys import image_key
from utils.data.questions import VALIDATION_ANSWER, validation_question
from utils.data.reason_seg_source import list_reason_seg_split, render_reason_seg_mask
from utils.data.refer import ReferSplit, load_refer_split
from utils.data.sample import Sample
from utils.data.sample_builder import SampleBuilder
from utils.reason_seg import ReasonSegAnnotation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ReasonSegItem:
    image_path: str
    annotation: ReasonSegAnnotation


@dataclass(frozen=True)
class _ReferItem:
    image_path: str
    image_id: int


class ValDataset(torch.utils.data.Dataset):
    """One validation set; every item is an inference :class:`Sample`.

    Args:
        dataset_dir: the ``--dataset_dir`` root.
        val_dataset: ``NAME|SPLIT`` (ReasonSeg) or ``DATASET|SPLIT_BY|SPLIT`` (referring).
        builder: the shared :class:`SampleBuilder`.

    An image that turns out unreadable is replaced by the next usable item, with a warning,
    and counted in :meth:`skip_counts`; images whose files are absent are left out up front.
    """

    def __init__(self, dataset_dir: str | Path, val_dataset: str, builder: SampleBuilder) -> None:
        dataset_dir = Path(dataset_dir)
        self.name = val_dataset
        self.builder = builder
        self.skips = SkipCounter([val_dataset])
        self.startup_skips: list[BadSampleError] = []  # files left out while indexing
        self.refer: ReferSplit | None = None
        parts = val_dataset.split("|")
        if len(parts) == 2:
            self.items = self._reason_seg_items(dataset_dir, *parts)
        elif len(parts) == 3:
            self.items = self._refer_items(dataset_dir, *parts)
        else:
            raise ValueError(
                f"--val_dataset {val_dataset!r} is neither NAME|SPLIT (ReasonSeg) nor "
                "DATASET|SPLIT_BY|SPLIT (e.g. refcoco|unc|val)."
            )
        if not self.items:
            raise MissingSourceError(f"{val_dataset}: found no usable image.")
        for error in self.startup_skips:
            self.skips.record(self.name, error)
        if self.refer is not None:
            # Absent images count too: the same photo may sit in another source's folder.
            paths = [image.path for image in self.refer.images.values()]
        else:
            paths = [item.image_path for item in self.items]
        self._image_keys = frozenset(image_key(path) for path in paths)

    def _reason_seg_items(self, dataset_dir: Path, name: str, split: str) -> list[_ReasonSegItem]:
        items, self.startup_skips = list_reason_seg_split(dataset_dir, name, split)
        return [_ReasonSegItem(path, annotation) for path, annotation in items]

    def _refer_items(
        self, dataset_dir: Path, dataset: str, split_by: str, split: str
    ) -> list[_ReferItem]:
        self.refer = load_refer_split(dataset_dir, dataset, split_by, split)
        items = []
        for image_id, info in self.refer.images.items():
            if Path(info.path).is_file():
                items.append(_ReferItem(info.path, image_id))
            else:
                message = f"image {info.path!r} does not exist"
                self.startup_skips.append(BadSampleError(SkipReason.MISSING_FILE, message))
        return items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> Sample:
        """Item ``idx``, or the next usable one when its image turns out unreadable."""
        for offset in range(len(self.items)):
            try:
                return self.sample_at((idx + offset) % len(self.items))
            except BadSampleError as error:
                self.skips.record(self.name, error)
        raise RuntimeError(f"{self.name}: no validation image is usable (see the warnings above).")

    def sample_at(self, index: int) -> Sample:
        """Item ``index``; raises :class:`BadSampleError` when it cannot be used."""
        item = self.items[index]
        image = self.builder.read_image(item.image_path)
        height, width = image.shape[:2]
        if isinstance(item, _ReasonSegItem):
            texts = [item.annotation.texts[0].strip()]
            is_sentence = item.annotation.is_sentence
            masks = render_reason_seg_mask(item.annotation, height, width)[None]  # 0 / 1 / 255
        else:
            info = self.refer.images[item.image_id]
            if (info.height, info.width) != (height, width):
                raise BadSampleError(
                    SkipReason.BAD_ANNOTATION,
                    f"{item.image_path}: instances.json says {info.height}x{info.width}, the "
                    f"image is {height}x{width}",
                )
            expressions = self.refer.expressions[item.image_id]
            texts = [expression.text.strip().lower() for expression in expressions]
            is_sentence = False
            masks = np.stack([self.refer.mask(item.image_id, e) for e in expressions])
        questions = [validation_question(text, is_sentence) for text in texts]
        conversations = [self.builder.conversation([(q, VALIDATION_ANSWER)]) for q in questions]
        return self.builder.build(
            image_path=item.image_path,
            image=image,
            conversations=conversations,
            masks=masks,
            questions=questions,
            sampled_classes=texts,
            inference=True,
        )

    def image_keys(self) -> set[str]:
        """Identities of this set's images (for ``--exclude_val``)."""
        return set(self._image_keys)

    def skip_counts(self) -> dict[str, dict[str, int]]:
        return self.skips.counts()
