"""A deterministic toy dataset of coloured shapes, written in every on-disk format of LISA's data.

``python -m tools.toy_dataset --dataset_dir ./dataset`` (or :func:`make_toy_dataset`) writes, under
the dataset folder, the tree of the original README with small synthetic pictures (coloured
circles, triangles, squares, rectangles, pentagons, hexagons and stars on a light background, two
to four per picture, never overlapping), so that the real readers and ``train_ds.py`` take it
unchanged::

    toy_dataset.json                                  marker: parameters, counts, files written
    ade20k/images/training/ADE_train_%08d.jpg
    ade20k/annotations/training/ADE_train_%08d.png    class position + 1, 0 = other
    coco/train2017/%012d.jpg                          COCO-Stuff, PACO-LVIS, LLaVA pictures
    coco/train2017/reason_seg_train_%06d.jpg          copies of the ReasonSeg training pictures
    cocostuff/train2017/%012d.png                     class position, 255 = unlabeled
    llava_dataset/llava_instruct_150k.json
    llava_dataset/reason_seg_targets.json             ReasonSeg training queries answered in words
    mapillary/config_v2.0.json
    mapillary/training/images/toy%07d.jpg
    mapillary/training/v2.0/labels/toy%07d.png        palette PNG, label index
    reason_seg/ReasonSeg/{train,val,test}/{split}_%06d.jpg + .json
    reason_seg/ReasonSeg/explanatory/train.json
    refer_seg/images/mscoco/images/train2014/COCO_train2014_%012d.jpg
    refer_seg/images/saiapr_tc-12/%02d/images/%d.jpg
    refer_seg/refclef/instances.json, refs(unc).p, refs(berkeley).p      (RLE masks)
    refer_seg/refcoco/instances.json, refs(unc).p, refs(google).p
    refer_seg/refcoco+/instances.json, refs(unc).p
    refer_seg/refcocog/instances.json, refs(umd).p, refs(google).p
    refer_seg/grefcoco/instances.json, grefs(unc).json
    vlpart/paco/annotations/paco_lvis_v1_train.json
    vlpart/pascal_part/train.json
    vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/2008_%06d.jpg

Semantic segmentation classes: each shape kind is one class, named after a real class of the
ADE20K and COCO-Stuff lists (circle = plate, triangle = tent, square = pillow, rectangle = door,
pentagon = house, hexagon = clock, star = flower; see ``classes.py``); PACO-LVIS, PASCAL-Part and
the REFER files name the shapes themselves, and the stars' parts "star:point" and "star:center".
ReasonSeg holds reasoning queries with one target each (``queries.py``), some with an "ignore"
region (a faded look-alike shape) or a "flag" polygon; REFER holds referring expressions in each
dataset's style (``expressions.py``); LLaVA holds questions about the scene
(``conversations.py``).
"""

from tools.toy_dataset.generate import ToyDatasetSummary, make_toy_dataset
from tools.toy_dataset.output import ToyDatasetError

__all__ = ["ToyDatasetError", "ToyDatasetSummary", "make_toy_dataset"]
