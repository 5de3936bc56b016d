"""Writes a small dataset tree in the real on-disk formats of every source (tests, benchmark).

Every image shows 1-3 coloured rectangles on a grey background; the rectangles are the objects
of all annotations (class maps, COCO polygons, REFER references, ReasonSeg polygons), so masks
can be checked against the drawing. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

COCO_TRAIN2014 = "refer_seg/images/mscoco/images/train2014"


@dataclass
class Box:
    top: int
    left: int
    bottom: int  # exclusive
    right: int  # exclusive

    def polygon(self) -> list[float]:
        """COCO polygon [x0, y0, ...]: edges on pixel borders, so it covers exactly the box."""
        x0, y0, x1, y1 = self.left, self.top, self.right, self.bottom
        return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]

    def points(self) -> list[list[float]]:
        """ReasonSeg (labelme) corners: filled with OpenCV, which includes the outline pixels."""
        x0, y0, x1, y1 = self.left, self.top, self.right - 1, self.bottom - 1
        return [
            [float(x0), float(y0)],
            [float(x1), float(y0)],
            [float(x1), float(y1)],
            [float(x0), float(y1)],
        ]

    def mask(self, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[self.top : self.bottom, self.left : self.right] = 1
        return mask


def random_boxes(rng: np.random.Generator, height: int, width: int, count: int) -> list[Box]:
    """``count`` disjoint boxes, one per horizontal band of the image."""
    boxes = []
    band = height // count
    for i in range(count):
        top = i * band + int(rng.integers(0, band // 4 + 1))
        bottom = min(top + max(4, band // 2), (i + 1) * band)
        left = int(rng.integers(0, width // 2))
        right = left + int(rng.integers(4, width // 2))
        boxes.append(Box(top, left, bottom, right))
    return boxes


def write_image(path: Path, height: int, width: int, boxes: list[Box], rng) -> None:
    """A JPEG (or PNG, by suffix) with each box in its own colour."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    for box in boxes:
        image[box.top : box.bottom, box.left : box.right] = rng.integers(0, 256, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 90} if path.suffix == ".jpg" else {}
    Image.fromarray(image).save(path, **options)


def _size(rng: np.random.Generator, sizes: tuple[int, int]) -> tuple[int, int]:
    return int(rng.integers(sizes[0], sizes[1] + 1)), int(rng.integers(sizes[0], sizes[1] + 1))


def _objects(rng, sizes):
    height, width = _size(rng, sizes)
    return height, width, random_boxes(rng, height, width, int(rng.integers(1, 4)))


def write_label_map(path: Path, height: int, width: int, boxes: list[Box], values, fill: int):
    label = np.full((height, width), fill, dtype=np.uint8)
    for box, value in zip(boxes, values, strict=True):
        label[box.top : box.bottom, box.left : box.right] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label).save(path)


def write_ade20k(root: Path, count: int, rng, sizes=(96, 256)) -> None:
    """images/training/*.jpg + annotations/training/*.png, 0 = other, classes 1..150."""
    for i in range(count):
        height, width, boxes = _objects(rng, sizes)
        name = f"ADE_train_{i + 1:08d}"
        write_image(root / f"ade20k/images/training/{name}.jpg", height, width, boxes, rng)
        values = rng.choice(np.arange(1, 151), size=len(boxes), replace=False)
        write_label_map(
            root / f"ade20k/annotations/training/{name}.png", height, width, boxes, values, 0
        )


def write_cocostuff(root: Path, count: int, rng, sizes=(96, 256), first_id: int = 1) -> None:
    """cocostuff/train2017/*.png beside coco/train2017/*.jpg, 255 = unlabeled."""
    for i in range(count):
        height, width, boxes = _objects(rng, sizes)
        name = f"{first_id + i:012d}"
        write_image(root / f"coco/train2017/{name}.jpg", height, width, boxes, rng)
        values = rng.choice(np.arange(0, 182), size=len(boxes), replace=False)
        write_label_map(root / f"cocostuff/train2017/{name}.png", height, width, boxes, values, 255)


def write_mapillary(root: Path, count: int, rng, sizes=(96, 256)) -> None:
    """config_v2.0.json (labels with readable names) + training/{images,v2.0/labels}."""
    labels = [
        {"name": f"class--{i}", "readable": f"Thing {i}", "color": [i, i, i]} for i in range(124)
    ]
    (root / "mapillary").mkdir(parents=True, exist_ok=True)
    (root / "mapillary/config_v2.0.json").write_text(json.dumps({"labels": labels}))
    for i in range(count):
        height, width, boxes = _objects(rng, sizes)
        name = f"mapillary{i:06d}"
        write_image(root / f"mapillary/training/images/{name}.jpg", height, width, boxes, rng)
        values = rng.choice(np.arange(0, 123), size=len(boxes), replace=False)
        write_label_map(
            root / f"mapillary/training/v2.0/labels/{name}.png", height, width, boxes, values, 123
        )


def _coco_json(images, annotations, categories) -> dict:
    return {"images": images, "annotations": annotations, "categories": categories}


def write_paco_lvis(root: Path, count: int, rng, sizes=(96, 256), first_id: int = 100000) -> None:
    """vlpart/paco/annotations/paco_lvis_v1_train.json; images coco/train2017/*.jpg."""
    categories = [
        {"id": 1, "name": "mug"},
        {"id": 2, "name": "mug:handle"},
        {"id": 3, "name": "bottle_(container):cap_(bottle)"},
    ]
    images, annotations = [], []
    for i in range(count):
        height, width, boxes = _objects(rng, sizes)
        image_id = first_id + i
        file_name = f"train2017/{image_id:012d}.jpg"
        write_image(root / "coco" / file_name, height, width, boxes, rng)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for box in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 4)),
                    "segmentation": [box.polygon()],
                }
            )
    path = root / "vlpart/paco/annotations/paco_lvis_v1_train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_coco_json(images, annotations, categories)))


def write_pascal_part(root: Path, count: int, rng, sizes=(96, 256)) -> None:
    """vlpart/pascal_part/train.json; images VOCdevkit/VOC2010/JPEGImages/*.jpg."""
    categories = [{"id": 1, "name": "dog:head"}, {"id": 2, "name": "car:wheel"}]
    images, annotations = [], []
    for i in range(count):
        height, width, boxes = _objects(rng, sizes)
        file_name = f"2008_{i:06d}.jpg"
        write_image(
            root / "vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages" / file_name,
            height,
            width,
            boxes,
            rng,
        )
        images.append({"id": i + 1, "file_name": file_name, "height": height, "width": width})
        for box in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, 3)),
                    "segmentation": [box.polygon()],
                }
            )
    path = root / "vlpart/pascal_part/train.json"
    path.write_text(json.dumps(_coco_json(images, annotations, categories)))


def _image_refs(
    image_id: int, ann_ids: list[int], split: str, first_ref: int, grefcoco: bool
) -> list[dict]:
    """The references of one image: two sentences per object; gRefCOCO adds one to all the
    objects and one to nothing (no_target)."""
    refs = []
    for k, ann_id in enumerate(ann_ids):
        ref_id = first_ref + len(refs)
        sentences = [
            {"sent": f" The Object {k} of image {image_id} ", "sent_id": 2 * ref_id},
            {"sent": f"thing number {k}", "sent_id": 2 * ref_id + 1},
        ]
        refs.append(
            {
                "ref_id": ref_id,
                "image_id": image_id,
                "ann_id": [ann_id] if grefcoco else ann_id,
                "category_id": [1] if grefcoco else 1,
                "split": split,
                "sentences": sentences,
            }
        )
    if grefcoco:
        ref_id = first_ref + len(refs)
        refs.append(
            {
                "ref_id": ref_id,
                "image_id": image_id,
                "ann_id": ann_ids,
                "category_id": [1],
                "split": split,
                "sentences": [{"sent": "all the objects", "sent_id": 10**6 + ref_id}],
            }
        )
        ref_id += 1
        refs.append(
            {
                "ref_id": ref_id,
                "image_id": image_id,
                "ann_id": [-1],
                "category_id": [],
                "split": split,
                "no_target": True,
                "sentences": [{"sent": "the purple giraffe", "sent_id": 10**6 + ref_id}],
            }
        )
    return refs


def write_refer(
    root: Path,
    dataset: str,
    split_by: str,
    rng,
    splits: dict[str, int],
    sizes=(96, 256),
    first_id: int = 200000,
) -> list[dict]:
    """refer_seg/<dataset>/refs(<split_by>).p (or grefs json) + instances.json and images.

    ``splits`` gives the number of images per split name. Returns the references written.
    """
    grefcoco = dataset == "grefcoco"
    if dataset == "refclef":
        image_dir, name_of = (
            root / "refer_seg/images/saiapr_tc-12",
            lambda i: f"{i % 40:02d}/images/{i}.jpg",
        )
    else:
        image_dir, name_of = root / COCO_TRAIN2014, lambda i: f"COCO_train2014_{i:012d}.jpg"
    images, annotations, refs = [], [], []
    image_id = first_id
    for split, count in splits.items():
        for _ in range(count):
            height, width, boxes = _objects(rng, sizes)
            file_name = name_of(image_id)
            write_image(image_dir / file_name, height, width, boxes, rng)
            images.append(
                {"id": image_id, "file_name": file_name, "height": height, "width": width}
            )
            ann_ids = []
            for box in boxes:
                ann_id = len(annotations) + 1
                ann_ids.append(ann_id)
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": 1,
                        "segmentation": [box.polygon()],
                    }
                )
            refs += _image_refs(image_id, ann_ids, split, len(refs), grefcoco)
            image_id += 1
    folder = root / "refer_seg" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(
        json.dumps(_coco_json(images, annotations, [{"id": 1, "name": "object"}]))
    )
    if grefcoco:
        (folder / f"grefs({split_by}).json").write_text(json.dumps(refs))
    else:
        with open(folder / f"refs({split_by}).p", "wb") as handle:
            pickle.dump(refs, handle, protocol=2)
    return refs


def write_llava(root: Path, count: int, rng, sizes=(96, 256), first_id: int = 300000) -> None:
    """llava_dataset/llava_instruct_150k.json with images in coco/train2017."""
    items = []
    for i in range(count):
        height, width, boxes = _objects(rng, sizes)
        name = f"{first_id + i:012d}.jpg"
        write_image(root / "coco/train2017" / name, height, width, boxes, rng)
        items.append(
            {
                "id": name[:-4],
                "image": name,
                "conversations": [
                    {"from": "human", "value": "How many boxes are there?\n<image>"},
                    {"from": "gpt", "value": f"There are {len(boxes)} boxes."},
                    {"from": "human", "value": "Is the background grey?"},
                    {"from": "gpt", "value": "Yes, it is."},
                ],
            }
        )
    (root / "llava_dataset").mkdir(parents=True, exist_ok=True)
    (root / "llava_dataset/llava_instruct_150k.json").write_text(json.dumps(items))


def reason_seg_annotation(texts, is_sentence, boxes, ignore_boxes=()) -> dict:
    shapes = [{"label": "target", "points": b.points(), "shape_type": "polygon"} for b in boxes]
    shapes += [
        {"label": "ignore", "points": b.points(), "shape_type": "polygon"} for b in ignore_boxes
    ]
    shapes.append({"label": "flag", "points": [[0, 0], [1, 1]], "shape_type": "polygon"})
    return {"text": texts, "is_sentence": is_sentence, "shapes": shapes}


def write_reason_seg(
    root: Path, split: str, count: int, rng, sizes=(96, 256), explanatory: bool = True
) -> None:
    """reason_seg/ReasonSeg/<split>/*.jpg + *.json (+ explanatory/train.json for train)."""
    folder = root / "reason_seg/ReasonSeg" / split
    folder.mkdir(parents=True, exist_ok=True)
    explanations = []
    for i in range(count):
        height, width, boxes = _objects(rng, sizes)
        name = f"{split}_{i:04d}"
        write_image(folder / f"{name}.jpg", height, width, boxes, rng)
        is_sentence = bool(i % 2)
        texts = (
            [f"Which thing would you pick up first in picture {i}?", "What is topmost?"]
            if is_sentence
            else ["The Topmost Box", "the first box", "box one", "upper box"]
        )
        annotation = reason_seg_annotation(texts, is_sentence, boxes[:1], boxes[1:2])
        (folder / f"{name}.json").write_text(json.dumps(annotation))
        explanations.append(
            {"image": f"{name}.jpg", "query": texts[0], "outputs": "It is the box at the top."}
        )
    if explanatory and split == "train":
        path = root / "reason_seg/ReasonSeg/explanatory/train.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(explanations))


def write_tree(root: Path, count: int = 4, seed: int = 0, sizes=(96, 256)) -> Path:
    """Every source of the default training mixture plus the validation sets, ``count`` each."""
    rng = np.random.default_rng(seed)
    write_ade20k(root, count, rng, sizes)
    write_cocostuff(root, count, rng, sizes)
    write_mapillary(root, count, rng, sizes)
    write_paco_lvis(root, count, rng, sizes)
    write_pascal_part(root, count, rng, sizes)
    write_refer(root, "refclef", "unc", rng, {"train": count, "val": 1}, sizes, first_id=1)
    write_refer(root, "refcoco", "unc", rng, {"train": count, "val": 2, "testA": 1}, sizes, 200000)
    write_refer(root, "refcoco+", "unc", rng, {"train": count, "val": 1}, sizes, 210000)
    write_refer(root, "refcocog", "umd", rng, {"train": count, "val": 1, "test": 1}, sizes, 220000)
    write_refer(root, "grefcoco", "unc", rng, {"train": count, "val": 1}, sizes, 230000)
    write_llava(root, count, rng, sizes)
    write_reason_seg(root, "train", count, rng, sizes)
    write_reason_seg(root, "val", max(2, count // 2), rng, sizes)
    return root
