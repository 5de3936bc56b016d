"""The promptable segmenters a [SEG] state can prompt: the official SAM (this project's compact
implementation, ``model.segment_anything``) or SAM 2 (transformers' ``Sam2Model``).

The model keeps the segmenter module itself as ``visual_model`` (so that parameter names stay
those of its own checkpoints, and ``visual_model.mask_decoder.*`` is the decoder in both) and
asks :func:`segmenter_ops` for the few operations LISA needs. None of them knows the LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

SEGMENTER_KINDS = ("sam", "sam2")

# What encode() returns and decode() reads: opaque to the model (a tensor for SAM; SAM 2 adds
# its high-resolution feature maps).
ImageEmbedding = Any


class SegmenterOps(Protocol):
    """Stateless operations on one segmenter module (SAM or SAM 2)."""

    kind: str  # one of SEGMENTER_KINDS

    def prompt_width(self, module: nn.Module) -> int:
        """Width of one sparse prompt embedding (what text_hidden_fcs projects to)."""
        ...

    def input_size(self, module: nn.Module) -> int:
        """Side of the square image input of its encoder (1024 for both official families)."""
        ...

    def encode(
        self,
        module: nn.Module,
        images: torch.Tensor,
        original_size: tuple[int, int],
        resize: tuple[int, int],
    ) -> ImageEmbedding:
        """One image's embedding from its LisaBatch SAM input ``images`` [1, 3, H, W] (uint8
        pixels in the top-left ``original_size`` corner, see ``utils.sam_input``)."""
        ...

    def blank(self, module: nn.Module, like: torch.Tensor) -> ImageEmbedding:
        """An all-zero embedding (the decoder still runs, so that every rank runs the same
        modules), on ``like``'s device."""
        ...

    def decode(
        self,
        module: nn.Module,
        embedding: ImageEmbedding,
        prompts: torch.Tensor,
        resize: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Mask logits [n, H, W] at ``original_size`` of n prompts [n, prompt_width]."""
        ...


def segmenter_ops(module: nn.Module) -> SegmenterOps:
    """The operations for ``module`` (a ``model.segment_anything.Sam`` or a ``Sam2Model``)."""
    from model.segmenters.sam import OFFICIAL_SAM_OPS, is_official_sam
    from model.segmenters.sam2 import SAM2_OPS, is_sam2

    if is_official_sam(module):
        return OFFICIAL_SAM_OPS
    if is_sam2(module):
        return SAM2_OPS
    raise TypeError(f"{type(module).__name__} is not a segmenter LISA knows (SAM or SAM 2)")


def decode_per_image(
    module: nn.Module,
    images: torch.Tensor,
    prompts_per_image: Sequence[torch.Tensor],
    resize_sizes: Sequence[Sequence[int]],
    original_sizes: Sequence[Sequence[int]],
) -> list[torch.Tensor]:
    """Masks [n_i, H_i, W_i] (logits) of each image's prompts [n_i, prompt_width].

    An image without prompts gets [0, H, W] and costs nothing, unless every rank must run the
    same modules: under ZeRO-3 (weights gathered collectively) its image is encoded anyway, and
    when several ranks train the decoder runs on no prompt (zero gradients, but every rank
    reduces the same ones), on a blank embedding where the encoder is frozen.
    """
    ops = segmenter_ops(module)
    encoder_trains = torch.is_grad_enabled() and any(
        p.requires_grad
        for name, p in module.named_parameters()
        if not name.startswith(("mask_decoder.", "prompt_encoder."))
    )
    partitioned = hasattr(next(module.parameters()), "ds_id")  # ZeRO-3
    all_ranks_train = torch.is_grad_enabled() and _several_ranks()
    masks = []
    for i, prompts in enumerate(prompts_per_image):
        height, width = (int(v) for v in original_sizes[i])
        resize = tuple(int(v) for v in resize_sizes[i])
        skip_encoder = prompts.shape[0] == 0 and not partitioned
        if skip_encoder and not all_ranks_train:
            masks.append(prompts.new_zeros(0, height, width))
            continue
        if skip_encoder and not encoder_trains:
            embedding = ops.blank(module, prompts)
        else:
            with torch.set_grad_enabled(encoder_trains):
                embedding = ops.encode(module, images[i : i + 1], (height, width), resize)
        masks.append(ops.decode(module, embedding, prompts, resize, (height, width)))
    return masks


def _several_ranks() -> bool:
    return torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


__all__ = [
    "SEGMENTER_KINDS",
    "ImageEmbedding",
    "SegmenterOps",
    "decode_per_image",
    "segmenter_ops",
]
