"""SAM's prompt encoder, with LISA's text-embedding prompts.

Points and box corners become random-Fourier positional encodings plus a learned type embedding
(sparse prompts); a low-resolution mask is downscaled by convolutions (dense prompt). LISA adds
``text_embeds``: the projected ``[SEG]`` hidden states, appended to the sparse prompts as they are.
"""

import math

import torch
from torch import nn

from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (Fourier features).

    Args:
        num_pos_feats: F; the encoding has 2F channels (sin and cos).
        scale: standard deviation of the random frequencies.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        # A persistent buffer: the frequencies are part of the official checkpoints.
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: [..., 2] as (x, y) normalised to [0, 1] -> [..., 2F]."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid -> [2F, h, w]."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        grid = torch.ones((h, w), device=matrix.device, dtype=matrix.dtype)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))  # [h, w, 2F]
        return pe.permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """coords_input: [B, N, 2] pixel (x, y) in an (H, W) image -> [B, N, 2F]."""
        coords = coords_input.to(self.positional_encoding_gaussian_matrix.dtype)
        coords = torch.stack(
            [coords[..., 0] / image_size[1], coords[..., 1] / image_size[0]], dim=-1
        )
        return self._pe_encoding(coords)


class PromptEncoder(nn.Module):
    """Encodes prompts for SAM's mask decoder.

    Args:
        embed_dim: prompt embedding width D (256).
        image_embedding_size: (h, w) of the image embedding grid.
        input_image_size: (H, W) of the padded encoder input, the frame of point coordinates.
        mask_in_chans: hidden channels of the mask downscaler.
        activation: activation class of the mask downscaler.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # Types: negative point, positive point, box top-left corner, box bottom-right corner.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        # Mask prompts come at 4x the embedding grid and are downscaled by two stride-2 convs.
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid -> [1, D, h, w]."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """points [B, N, 2] pixel (x, y), labels [B, N] (1 pos, 0 neg, -1 pad) -> [B, N(+1), D]."""
        points = points + 0.5  # to the pixel centre
        if pad:
            # Without a box, SAM appends one padding point.
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]  # [B, N, 1]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight, embedding)
        embedding = embedding + (labels == 0) * self.point_embeddings[0].weight
        return embedding + (labels == 1) * self.point_embeddings[1].weight

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes [B, 4] pixel (x0, y0, x1, y1) -> [B, 2, D]."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return embedding + corner_types  # [B, 2, D] + [2, D]

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed any combination of prompts; all given prompts share the batch size B.

        Args:
            points: (coords [B, N, 2] pixel (x, y), labels [B, N]).
            boxes: [B, 4] pixel (x0, y0, x1, y1).
            masks: [B, 1, 4h, 4w] mask logits.
            text_embeds: [B, k, D] LISA's projected [SEG] embeddings, appended as they are.

        Returns:
            sparse [B, N_sparse, D] (in the module's dtype) and dense [B, D, h, w].
        """
        batch_size = self._get_batch_size(points, boxes, masks, text_embeds)
        weight = self.no_mask_embed.weight  # [1, D]; its dtype and device are the module's
        parts = [weight.new_empty((batch_size, 0, self.embed_dim))]
        if points is not None:
            coords, labels = points
            parts.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        if text_embeds is not None:
            parts.append(text_embeds)
        sparse = torch.cat([part.to(weight.dtype) for part in parts], dim=1)

        if masks is not None:
            dense = self.mask_downscaling(masks.to(weight.dtype))
        else:
            h, w = self.image_embedding_size
            dense = weight.reshape(1, -1, 1, 1).expand(batch_size, -1, h, w)
        return sparse, dense

    @staticmethod
    def _get_batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        text_embeds: torch.Tensor | None,
    ) -> int:
        """Batch size of the first prompt given, 1 when there is none."""
        if points is not None:
            return points[0].shape[0]
        for prompt in (boxes, masks, text_embeds):
            if prompt is not None:
                return prompt.shape[0]
        return 1
