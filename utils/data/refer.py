"""Reader of the REFER annotation format (refCLEF, refCOCO, refCOCO+, refCOCOg) and gRefCOCO.

On disk, under ``refer_seg/<dataset>/``:

* ``refs(<split_by>).p``: a pickle (the format is a pickle; only plain containers are accepted)
  holding a list of references ``{ref_id, image_id, ann_id, category_id, split, sentences:
  [{sent, sent_id, tokens, raw}]}``. ``split_by`` is ``unc`` (refclef, refcoco, refcoco+),
  ``umd`` or ``google`` (refcocog).
* gRefCOCO: ``grefs(unc).json`` with the same keys, where ``ann_id`` is a list and ``[-1]``
  marks an expression that refers to nothing (its mask is empty).
* ``instances.json``: COCO-style ``images`` (id, file_name, height, width) and ``annotations``
  (id, segmentation as polygons or RLE).

Split names follow the REFER API: ``train``, ``val``; ``test`` (every split containing
"test"); ``testA``/``testB``/``testC`` (splits containing that letter, so testAB counts for
both); ``testAB``/``testBC``/``testAC`` exactly. gRefCOCO splits match exactly.
"""

from __future__ import annotations

import pickle
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.data import layout
from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.coco_masks import decode_segmentation
from utils.data.image_keys import image_key

NO_TARGET_ANN_ID = -1  # gRefCOCO: the expression matches no object


@dataclass(frozen=True)
class ReferImage:
    path: str  # absolute image path
    height: int
    width: int


@dataclass(frozen=True)
class Expression:
    text: str  # the sentence as stored
    ann_ids: tuple[int, ...]  # the object(s) it refers to; (-1,) for none


@dataclass
class ReferSplit:
    """The images of one split and, per image, its expressions in file order."""

    dataset: str
    split_by: str
    split: str
    images: dict[int, ReferImage]  # image id -> image, sorted by id
    expressions: dict[int, list[Expression]]  # image id -> expressions of the split's refs
    segmentations: dict[int, Any]  # annotation id -> segmentation

    def mask(self, image_id: int, expression: Expression) -> np.ndarray:
        """[H, W] uint8 {0, 1}: union of the referred objects (empty for no target)."""
        info = self.images[image_id]
        mask = np.zeros((info.height, info.width), dtype=np.uint8)
        for ann_id in expression.ann_ids:
            if ann_id == NO_TARGET_ANN_ID:
                continue
            if ann_id not in self.segmentations:
                raise BadSampleError(
                    SkipReason.BAD_ANNOTATION,
                    f"{self.dataset}: annotation {ann_id} of {info.path} is not in instances.json",
                )
            where = f"{self.dataset} annotation {ann_id} of {info.path}"
            mask |= decode_segmentation(self.segmentations[ann_id], info.height, info.width, where)
        return mask


class _PlainDataUnpickler(pickle.Unpickler):
    """Refuses every class: REFER pickles hold only lists, dicts, strings and numbers."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a REFER pickle")


def _load_refs_pickle(path: Path, source: str) -> list[dict]:
    for encoding in ("ASCII", "latin1"):  # latin1 reads Python 2 byte strings
        try:
            with open(path, "rb") as handle:
                return _PlainDataUnpickler(handle, encoding=encoding).load()
        except UnicodeDecodeError:
            continue
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise MissingSourceError(
                f"{source}: {path} is not a REFER references pickle ({error})."
            ) from None
    raise MissingSourceError(f"{source}: {path} holds undecodable text.")


def _split_matches(dataset: str, wanted: str, stored: str) -> bool:
    if dataset == "grefcoco":
        return stored == wanted
    if wanted in ("testA", "testB", "testC"):
        return wanted[-1] in stored
    if wanted == "test":
        return "test" in stored
    return stored == wanted


KNOWN_SPLITS = ("train", "val", "test", "testA", "testB", "testC", "testAB", "testBC", "testAC")


def load_refer_split(
    dataset_dir: Path,
    dataset: str,
    split_by: str,
    split: str,
    exclude: Collection[str] = (),
) -> ReferSplit:
    """Read one split of a REFER-format dataset.

    Args:
        dataset_dir: the ``--dataset_dir`` root.
        dataset: ``refclef``, ``refcoco``, ``refcoco+``, ``refcocog`` or ``grefcoco``.
        split_by: ``unc``, ``umd``, ``google`` ...
        split: see the module docstring.
        exclude: image keys (:func:`image_key`) to leave out.

    Raises:
        MissingSourceError: unknown dataset or split, absent or malformed files.
    """
    source = f"{dataset}|{split_by}|{split}"
    if dataset not in layout.REFER_IMAGE_DIRS:
        raise ValueError(
            f"{source}: unknown referring dataset {dataset!r}; expected one of "
            f"{', '.join(layout.REFER_IMAGE_DIRS)}."
        )
    if split not in KNOWN_SPLITS:
        raise ValueError(f"{source}: unknown split {split!r}; expected one of {KNOWN_SPLITS}.")
    refs_rel, instances_rel = layout.refer_annotation_files(dataset, split_by)
    refs_file = layout.require_file(dataset_dir, refs_rel, source)
    instances_file = layout.require_file(dataset_dir, instances_rel, source)
    image_dir = dataset_dir / layout.REFER_IMAGE_DIRS[dataset]
    if dataset == "grefcoco":
        refs = layout.load_json(refs_file, source)
    else:
        refs = _load_refs_pickle(refs_file, source)
    instances = layout.load_json(instances_file, source)
    try:
        return _index_split(refs, instances, dataset, split_by, split, image_dir, exclude)
    except (KeyError, TypeError, ValueError) as error:
        raise MissingSourceError(
            f"{source}: {refs_file} or {instances_file} is not in the REFER format ({error!r})."
        ) from None


def _index_split(
    refs: list[dict],
    instances: dict,
    dataset: str,
    split_by: str,
    split: str,
    image_dir: Path,
    exclude: Collection[str],
) -> ReferSplit:
    all_images = {int(info["id"]): info for info in instances["images"]}
    expressions: dict[int, list[Expression]] = {}
    wanted_anns: set[int] = set()
    for ref in refs:
        if not _split_matches(dataset, split, str(ref["split"])):
            continue
        image_id = int(ref["image_id"])
        if image_id not in all_images:
            raise KeyError(f"ref {ref.get('ref_id')} names image {image_id}, absent from images")
        raw_ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
        ann_ids = tuple(int(a) for a in raw_ids)
        wanted_anns.update(ann_ids)
        for sentence in ref["sentences"]:
            expressions.setdefault(image_id, []).append(Expression(str(sentence["sent"]), ann_ids))
    images = {}
    for image_id in sorted(expressions):
        info = all_images[image_id]
        path = str(image_dir / info["file_name"])
        if image_key(path) in exclude:
            del expressions[image_id]
            continue
        images[image_id] = ReferImage(path, int(info["height"]), int(info["width"]))
    segmentations = {
        int(ann["id"]): ann.get("segmentation")
        for ann in instances["annotations"]
        if int(ann["id"]) in wanted_anns
    }
    return ReferSplit(dataset, split_by, split, images, expressions, segmentations)
