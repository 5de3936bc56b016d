"""SAM's mask decoder: output tokens and prompt tokens attend to the image embedding; each mask
token then predicts, through a small hypernetwork MLP, the weights of a dot product with the
upscaled image features."""

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .transformer import TwoWayTransformer


class MLP(nn.Module):
    """Plain MLP with ReLU between its linear layers.

    Args:
        input_dim, hidden_dim, output_dim: widths.
        num_layers: number of linear layers.
        sigmoid_output: apply a sigmoid to the output.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., input_dim] -> [..., output_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MaskDecoder(nn.Module):
    """Predicts mask logits and their IoU scores from an image embedding and prompt embeddings.

    Args:
        transformer_dim: width D of the tokens and the image embedding.
        transformer: the two-way transformer.
        num_multimask_outputs: masks predicted for ambiguous prompts (one more token gives the
            single-mask output).
        activation: activation of the upscaling path.
        iou_head_depth: layers of the IoU head.
        iou_head_hidden_dim: hidden width of the IoU head.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        # 4x upscaling of the image features, to D/8 channels.
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode n prompts against one image embedding (or n of them).

        Args:
            image_embeddings: [1 or n, D, h, w]; a single embedding is shared by all n prompts.
            image_pe: [1, D, h, w] positional encoding of the grid.
            sparse_prompt_embeddings: [n, N_sparse, D].
            dense_prompt_embeddings: [n, D, h, w].
            multimask_output: return the 3 multimask outputs instead of the single mask.

        Returns:
            masks [n, 1 or 3, 4h, 4w] logits and iou_pred [n, 1 or 3].
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
        )
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice], iou_pred[:, mask_slice]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' outputs: masks [n, M, 4h, 4w] and iou_pred [n, M], M = 1 + multimask."""
        n = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, n):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}; expected 1 or the "
                f"number of prompts {n}"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])  # [1+M, D]
        output_tokens = output_tokens.unsqueeze(0).expand(n, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)  # [n, 1+M+Ns, D]

        # One image embedding serves every prompt: broadcast it instead of copying it n times.
        src = image_embeddings + dense_prompt_embeddings  # [n, D, h, w]
        pos_src = image_pe.expand(n, -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)  # [n, T, D], [n, h*w, D]
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]  # [n, M, D]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self.output_upscaling(src)  # [n, D/8, 4h, 4w]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # [n, M, D/8]
        b, c, h, w = upscaled.shape
        # [n, M, 4h, 4w]
        masks = (hyper_in @ upscaled.flatten(2)).view(b, self.num_mask_tokens, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out)  # [n, M]
        return masks, iou_pred
