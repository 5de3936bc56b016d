"""The official SAM (``model.segment_anything.Sam``) as LISA's segmenter.

Its input is SAM's own: the longest side resized to the encoder's side with Pillow's bilinear
numbers, normalised and zero-padded to a square (``utils.sam_input.sam_encoder_input``). The
projected ``[SEG]`` states join the sparse prompts as ``text_embeds``; the dense prompt is the
"no mask" embedding; masks come back through the padding to the original size
(``Sam.postprocess_masks``). These are the numbers LISA's released checkpoints were trained with.
"""

from __future__ import annotations

import torch
from torch import nn

from model.segment_anything import Sam
from utils.sam_input import sam_encoder_input


def is_official_sam(module: nn.Module) -> bool:
    """Whether ``module`` is this project's official-layout SAM."""
    return isinstance(module, Sam)


class OfficialSamOps:
    """:class:`model.segmenters.SegmenterOps` of the official SAM (stateless)."""

    kind = "sam"

    def prompt_width(self, module: Sam) -> int:
        """Width of the sparse prompts and of the image embedding (256 for every size)."""
        return module.prompt_encoder.embed_dim

    def input_size(self, module: Sam) -> int:
        """Side of the square, padded encoder input (1024 for the official files)."""
        return module.image_size

    def encode(
        self,
        module: Sam,
        images: torch.Tensor,
        original_size: tuple[int, int],
        resize: tuple[int, int],
    ) -> torch.Tensor:
        """One image's embedding [1, C, g, g] in the encoder's dtype.

        Args:
            images: [1, 3, H, W] uint8 pixels, the image in the top-left ``original_size``
                corner; or [1, 3, S, S] float, already resized, normalised and padded.
            original_size: (h, w) of the image.
            resize: (h', w'), its longest side scaled to the encoder's side S.
        """
        encoder_dtype = next(module.image_encoder.parameters()).dtype
        size = tuple(int(v) for v in original_size)
        resized = tuple(int(v) for v in resize)
        pixels = sam_encoder_input(images, [size], [resized], module.image_size)  # [1, 3, S, S]
        return module.image_encoder(pixels.to(encoder_dtype))

    def blank(self, module: Sam, like: torch.Tensor) -> torch.Tensor:
        """Zeros [1, C, g, g] shaped like an image embedding, in the decoder's dtype, on
        ``like``'s device."""
        height, width = module.prompt_encoder.image_embedding_size
        dtype = next(module.mask_decoder.parameters()).dtype
        return like.new_zeros(1, module.prompt_encoder.embed_dim, height, width, dtype=dtype)

    def decode(
        self,
        module: Sam,
        embedding: torch.Tensor,
        prompts: torch.Tensor,
        resize: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Mask logits [n, H, W] at ``original_size`` of n prompts [n, C] (one sparse token
        each) on one image embedding [1, C, g, g], in the embedding's dtype."""
        dtype = embedding.dtype
        sparse, dense = module.prompt_encoder(
            points=None, boxes=None, masks=None, text_embeds=prompts.to(dtype).unsqueeze(1)
        )
        low_res, _ = module.mask_decoder(
            image_embeddings=embedding,
            image_pe=module.prompt_encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=False,
        )  # [n, 1, 4g, 4g]
        size = tuple(int(v) for v in original_size)
        resized = tuple(int(v) for v in resize)
        return module.postprocess_masks(low_res, input_size=resized, original_size=size)[:, 0]


OFFICIAL_SAM_OPS = OfficialSamOps()

__all__ = ["OFFICIAL_SAM_OPS", "OfficialSamOps", "is_official_sam"]
