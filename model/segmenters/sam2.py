"""SAM 2 (transformers' ``Sam2Model``) as LISA's segmenter, for single images.

Preprocessing is Sam2ImageProcessor's, done on the device from the uint8 pixels of
``LisaBatch.images``: the whole image resized to the encoder's square input without keeping its
aspect ratio (Pillow's bilinear numbers), scaled by 1/255 and normalised with ImageNet's mean and
std, as the processor's configuration of the published checkpoints says. There is no padding.

The image encoder gives three feature maps (strides 4, 8 and 16); as ``Sam2Model`` does for a
single image, the "no memory" embedding is added to the coarsest, which is the image embedding
the mask decoder attends to. The two finer maps feed the decoder's upscaling. Their 1x1
projections (``mask_decoder.conv_s0`` / ``conv_s1``) belong to the decoder, so they run in
:meth:`Sam2Ops.decode`, where they train with the rest of the decoder even when the encoder runs
without gradients.

Decoding: the prompt encoder's dense "no mask" embedding and the positional encoding of the
embedding grid, each prompt as one sparse token, the mask decoder's single-mask output (token 0,
the one LISA's losses train, in training and in evaluation alike: ``Sam2MaskDecoder`` would switch
to one of its multimask outputs when token 0 is unstable in eval mode), then Sam2's
post-processing: bilinear upsampling of the low-resolution logits straight to the original size.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Sam2Model

from utils.sam_input import resize_bilinear_like_pil

# Sam2ImageProcessor's numbers (its class defaults, and the preprocessor_config.json of the
# published facebook/sam2.1-hiera-* checkpoints): ImageNet statistics on the 0-1 scale.
SAM2_IMAGE_MEAN = (0.485, 0.456, 0.406)
SAM2_IMAGE_STD = (0.229, 0.224, 0.225)
SAM2_RESCALE_FACTOR = 1 / 255


def is_sam2(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' SAM 2 image model."""
    return isinstance(module, Sam2Model)


@dataclass
class Sam2ImageEmbedding:
    """What :meth:`Sam2Ops.encode` gives for one image (C = the decoder's width, g = the grid of
    the image embedding, input side / 16)."""

    image_embedding: torch.Tensor  # [1, C, g, g], the "no memory" embedding added
    features_s0: torch.Tensor  # [1, C, 4g, 4g], the stride-4 map, before conv_s0
    features_s1: torch.Tensor  # [1, C, 2g, 2g], the stride-8 map, before conv_s1


def sam2_pixel_values(
    images: torch.Tensor, original_size: tuple[int, int], side: int
) -> torch.Tensor:
    """Sam2ImageProcessor's ``pixel_values`` [1, 3, side, side] float32 of one image, on its
    device.

    The numbers of the processor's PIL path: Pillow's bilinear resize of the uint8 pixels to
    side x side, then ``float32(x * 1/255)`` (the product in float64), then ``(x - mean) / std``
    in float32.

    Args:
        images: [1, 3, H, W] uint8 RGB, the image in the top-left ``original_size`` corner.
        original_size: (h, w) of the image.
        side: the encoder's square input side.
    """
    if images.dtype != torch.uint8:
        raise ValueError(
            f"SAM 2 takes the uint8 pixels of LisaBatch.images, got {images.dtype} (SAM 2 "
            "resizes and normalises by itself)."
        )
    height, width = (int(v) for v in original_size)
    if images.dim() != 4 or images.shape[0] != 1 or images.shape[1] != 3:
        raise ValueError(f"expected one RGB image [1, 3, H, W], got {list(images.shape)}.")
    if not (0 < height <= images.shape[-2] and 0 < width <= images.shape[-1]):
        raise ValueError(
            f"the original size {height}x{width} does not fit the "
            f"{images.shape[-2]}x{images.shape[-1]} pixels of the SAM input."
        )
    resized = resize_bilinear_like_pil(images[0, :, :height, :width], (side, side))
    scaled = (resized.double() * SAM2_RESCALE_FACTOR).float()  # [3, side, side]
    mean, std = _normalisation(images.device)
    # Contiguous whatever the resize gave (Pillow's is channels-last): the encoder's first
    # convolution rounds according to the layout of its input.
    return ((scaled - mean) / std).unsqueeze(0).contiguous()


@functools.cache
def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std [3, 1, 1] float32 on ``device``, copied there once."""
    mean = torch.tensor(SAM2_IMAGE_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(SAM2_IMAGE_STD, dtype=torch.float32).view(3, 1, 1)
    return mean.to(device), std.to(device)


# Serialises the moments in which a decoder's eval-time multimask fallback is switched off.
_SINGLE_MASK_LOCK = threading.Lock()


@contextlib.contextmanager
def _single_mask_output(decoder: nn.Module) -> Iterator[None]:
    """The mask decoder answers with its token-0 mask in eval mode too (see the module doc)."""
    with _SINGLE_MASK_LOCK:
        dynamic = decoder.dynamic_multimask_via_stability
        decoder.dynamic_multimask_via_stability = False
        try:
            yield
        finally:
            decoder.dynamic_multimask_via_stability = dynamic


class Sam2Ops:
    """:class:`model.segmenters.SegmenterOps` of transformers' ``Sam2Model`` (stateless)."""

    kind = "sam2"

    def prompt_width(self, module: Sam2Model) -> int:
        """Width of a sparse prompt token (256 for the published checkpoints)."""
        return int(module.config.prompt_encoder_config.hidden_size)

    def input_size(self, module: Sam2Model) -> int:
        """Side of the square encoder input (1024 for the published checkpoints)."""
        return int(module.config.prompt_encoder_config.image_size)

    def encode(
        self,
        module: Sam2Model,
        images: torch.Tensor,
        original_size: tuple[int, int],
        resize: tuple[int, int],
    ) -> Sam2ImageEmbedding:
        """One image's feature maps, in the encoder's dtype.

        Args:
            images: [1, 3, H, W] uint8 pixels, the image in the top-left ``original_size``
                corner (``LisaBatch.images``).
            original_size: (h, w) of the image.
            resize: unused (the official SAM's longest-side size; SAM 2 fills its square).
        """
        side = self.input_size(module)
        pixel_values = sam2_pixel_values(images, original_size, side)  # [1, 3, side, side]
        dtype = next(module.vision_encoder.parameters()).dtype
        features = module.vision_encoder(pixel_values.to(dtype)).fpn_hidden_states
        features_s0, features_s1, coarsest = features  # strides 4, 8, 16
        # Added over [g*g, 1, C] and viewed back as Sam2Model does: the same numbers to the
        # last bit (the decoder's products see the same memory layout).
        tokens = coarsest.flatten(2).permute(2, 0, 1) + module.no_memory_embedding  # [g*g, 1, C]
        image_embedding = tokens.permute(1, 2, 0).view(coarsest.shape)  # [1, C, g, g]
        return Sam2ImageEmbedding(image_embedding, features_s0, features_s1)

    def blank(self, module: Sam2Model, like: torch.Tensor) -> Sam2ImageEmbedding:
        """Zeros shaped like an image's feature maps, in the decoder's dtype, on ``like``'s
        device."""
        grid, _ = module.prompt_encoder.image_embedding_size
        width = module.config.mask_decoder_config.hidden_size
        dtype = module.mask_decoder.iou_token.weight.dtype

        def zeros(side: int) -> torch.Tensor:
            return like.new_zeros(1, width, side, side, dtype=dtype)

        return Sam2ImageEmbedding(zeros(grid), zeros(4 * grid), zeros(2 * grid))

    def decode(
        self,
        module: Sam2Model,
        embedding: Sam2ImageEmbedding,
        prompts: torch.Tensor,
        resize: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Mask logits [n, H, W] at ``original_size``, in the decoder's dtype.

        Args:
            embedding: one image's :class:`Sam2ImageEmbedding`.
            prompts: [n, C], one sparse token per mask (LISA's projected [SEG] states); or
                [n, k, C], k tokens per mask (what Sam2's prompt encoder makes of points).
            resize: unused (there is no padding to undo).
            original_size: (H, W) to return the masks at.
        """
        decoder = module.mask_decoder
        dtype = decoder.iou_token.weight.dtype
        sparse = prompts if prompts.dim() == 3 else prompts.unsqueeze(1)  # [n, k, C]
        num_masks = sparse.shape[0]
        if num_masks == 0:
            # Sam2's decoder cannot run on no prompt; one zero prompt, cut off at the end, still
            # gives every decoder weight a (zero) gradient, as data-parallel training needs.
            sparse = sparse.new_zeros(1, *sparse.shape[1:])
        sparse = sparse.to(dtype).unsqueeze(0)  # [1, n, k, C]: one image, n masks
        # The "no mask" embedding over the grid [1, C, g, g], from the prompt encoder's forward
        # (where ZeRO-3 gathers its weights).
        _, dense = module.prompt_encoder(None, None, None, None)
        high_resolution = [
            decoder.conv_s0(embedding.features_s0.to(dtype)),  # [1, C/8, 4g, 4g]
            decoder.conv_s1(embedding.features_s1.to(dtype)),  # [1, C/4, 2g, 2g]
        ]
        # Contiguous, as Sam2Model's repeat over its batch leaves it (the same products).
        position = module.get_image_wide_positional_embeddings().contiguous()  # [1, C, g, g]
        with _single_mask_output(decoder):
            low_res = decoder(
                image_embeddings=embedding.image_embedding.to(dtype),
                image_positional_embeddings=position,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense.to(dtype),
                multimask_output=False,
                high_resolution_features=high_resolution,
            )[0]  # [1, n, 1, 4g, 4g]
        size = tuple(int(v) for v in original_size)
        masks = F.interpolate(low_res[0], size, mode="bilinear", align_corners=False)
        return masks[:num_masks, 0]  # [n, H, W]


SAM2_OPS = Sam2Ops()

__all__ = [
    "SAM2_IMAGE_MEAN",
    "SAM2_IMAGE_STD",
    "SAM2_OPS",
    "SAM2_RESCALE_FACTOR",
    "Sam2ImageEmbedding",
    "Sam2Ops",
    "is_sam2",
    "sam2_pixel_values",
]
