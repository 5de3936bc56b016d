"""The SAM module: image encoder, prompt encoder and mask decoder, plus SAM's own pre- and
post-processing of images and masks."""

import torch
import torch.nn.functional as F
from torch import nn

from utils.sam_input import SAM_PIXEL_MEAN, SAM_PIXEL_STD, normalise_pixels

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

__all__ = ["SAM_PIXEL_MEAN", "SAM_PIXEL_STD", "Sam"]


class Sam(nn.Module):
    """Segment Anything.

    LISA calls the three parts directly: the image encoder once per image, the prompt encoder
    with ``text_embeds``, the mask decoder with all of an image's prompts at once.

    Args:
        image_encoder: image -> [B, 256, grid, grid] embedding.
        prompt_encoder: prompts -> sparse and dense embeddings.
        mask_decoder: embeddings -> low-resolution mask logits and IoU scores.

    Images are normalised with SAM's pixel statistics (``utils.sam_input``: SAM_PIXEL_MEAN,
    SAM_PIXEL_STD), which no checkpoint holds.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        *,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def image_size(self) -> int:
        """Side of the square, padded encoder input."""
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a resized image and zero-pad it bottom/right to the encoder input size.

        Args:
            x: [B, 3, h, w] or [3, h, w] RGB on the 0-255 scale (any dtype), with
                max(h, w) <= image_size (already resized so the longest side fits).

        Returns:
            [..., 3, image_size, image_size] float32 on the device of ``x``
            (:func:`utils.sam_input.normalise_pixels`); the padding is zero after normalisation.
        """
        x = normalise_pixels(x)
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Bring low-resolution mask logits back to the original image.

        Args:
            masks: [n, C, 4*grid, 4*grid] logits from the mask decoder.
            input_size: (h', w') of the resized image before padding.
            original_size: (H, W) of the original image.

        Returns:
            [n, C, H, W] logits, in the dtype of `masks`.
        """
        masks = F.interpolate(
            masks, (self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : int(input_size[0]), : int(input_size[1])]
        original_size = (int(original_size[0]), int(original_size[1]))
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
