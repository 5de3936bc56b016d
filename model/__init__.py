"""The network: LISA (LLaMA + CLIP + projector + SAM) and its loading.

The public names are imported on first use, so that importing a submodule such as
``model.segment_anything`` does not pull in the whole stack.
"""

import logging
from importlib import import_module

# On CPUs with AVX512-BF16, bitsandbytes (imported through peft) logs at import time that an
# optional kernels package is absent; 4-bit loading works without it, so the line only misleads.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

_EXPORTS = {
    "LISAForCausalLM": "model.LISA",
    "LisaOutput": "model.LISA",
    "LisaConfig": "model.config",
    "load_pretrained_model": "model.loading",
    "LisaSegmenter": "model.segmenter",
    "SegmentationResult": "model.segmenter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
