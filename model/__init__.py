"""The network: LISA (LLaMA + CLIP + projector + SAM) and its loading."""

from model.config import LisaConfig
from model.LISA import LISAForCausalLM, LisaOutput
from model.loading import load_pretrained_model
from model.segmenter import LisaSegmenter, SegmentationResult

__all__ = [
    "LISAForCausalLM",
    "LisaConfig",
    "LisaOutput",
    "LisaSegmenter",
    "SegmentationResult",
    "load_pretrained_model",
]
