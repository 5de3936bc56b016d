"""Dataset readers: the four training sources in their real on-disk formats, the training
mixture, and the validation sets.

``build_datasets(data_config, clip_transform=..., samples_per_epoch=...)`` is what train_ds.py
calls.
"""

from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipCounter, SkipReason
from utils.data.build import (
    DataConfig,
    build_datasets,
    build_train_dataset,
    build_val_datasets,
)
from utils.data.hybrid_dataset import HybridDataset, SourceGroup
from utils.data.image_keys import image_key
from utils.data.label_map_sources import LabelMapSource
from utils.data.part_sources import PartSource
from utils.data.reason_seg_source import ReasonSegSource
from utils.data.refer import ReferSplit, load_refer_split
from utils.data.refer_seg_source import ReferSegSource
from utils.data.sample import Sample
from utils.data.sample_builder import SampleBuilder
from utils.data.val_dataset import ValDataset
from utils.data.vqa_source import VqaSource

__all__ = [
    "BadSampleError",
    "DataConfig",
    "HybridDataset",
    "LabelMapSource",
    "MissingSourceError",
    "PartSource",
    "ReasonSegSource",
    "ReferSegSource",
    "ReferSplit",
    "Sample",
    "SampleBuilder",
    "SkipCounter",
    "SkipReason",
    "SourceGroup",
    "ValDataset",
    "VqaSource",
    "build_datasets",
    "build_train_dataset",
    "build_val_datasets",
    "image_key",
    "load_refer_split",
]
