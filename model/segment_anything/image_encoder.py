"""SAM's image encoder: a plain ViT with windowed and global attention and a conv neck.

The image is cut into non-overlapping patches, an absolute position embedding is added, and
transformer blocks run either inside local windows (padded to whole windows) or over the full
grid. Every attention adds SAM's decomposed relative-position bias. The neck maps the grid to
``out_chans`` channels.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock


class PatchEmbed(nn.Module):
    """Image to patch embeddings with one strided convolution.

    Args:
        patch_size: side of a square patch (kernel and stride).
        in_chans: input image channels.
        embed_dim: output channels C.
    """

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, in_chans, H, W] -> [B, H/patch, W/patch, C] (channels last)."""
        return self.proj(x).permute(0, 2, 3, 1)


def relative_position_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Gather the relative-position embedding for every (query, key) pair along one axis.

    Args:
        size: number of positions along the axis (queries and keys share it).
        rel_pos: [2 * size - 1, head_dim] table indexed by (q - k) + size - 1.

    Returns:
        [size, size, head_dim].
    """
    if rel_pos.shape[0] != 2 * size - 1:
        raise ValueError(
            f"relative-position table has {rel_pos.shape[0]} rows, expected {2 * size - 1} "
            f"for an attention extent of {size}"
        )
    coords = torch.arange(size, device=rel_pos.device)
    index = coords[:, None] - coords[None, :] + (size - 1)  # [size, size]
    return rel_pos[index]


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """SAM's decomposed relative-position bias, to be added to the attention logits.

    Args:
        q: [B, nh, H*W, hd] queries (unscaled).
        rel_pos_h, rel_pos_w: [2H-1, hd], [2W-1, hd].
        size: (H, W) of the attended grid (queries and keys).

    Returns:
        [B, nh, H*W, H*W] additive bias, bias[(qh,qw),(kh,kw)] = q.Rh[qh,kh] + q.Rw[qw,kw].
    """
    h, w = size
    r_h = relative_position_table(h, rel_pos_h)  # [H, H, hd]
    r_w = relative_position_table(w, rel_pos_w)  # [W, W, hd]
    r_q = q.unflatten(2, (h, w))  # [B, nh, H, W, hd]
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, r_h)  # [B, nh, H, W, kH]
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, r_w)  # [B, nh, H, W, kW]
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # [B, nh, H, W, kH, kW]
    return bias.flatten(4).flatten(2, 3)


class Attention(nn.Module):
    """Multi-head self-attention over a 2-D grid with decomposed relative positions.

    Args:
        dim: channels C.
        num_heads: nh; head_dim = C / nh.
        qkv_bias: whether the qkv projection has a bias.
        input_size: (H, W) of the grid this attention sees (a window or the whole grid);
            sizes the relative-position tables.
    """

    def __init__(
        self, *, dim: int, num_heads: int, qkv_bias: bool, input_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # SAM initialises the tables to zero; pretrained checkpoints overwrite them.
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)  # [B, HW, 3, nh, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, nh, HW, hd]
        bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, nh, HW, hd]
        x = x.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(x)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad a grid to whole windows and cut it into windows.

    Args:
        x: [B, H, W, C].
        window_size: side ws of a square window.

    Returns:
        windows [B * nW, ws, ws, C] and the padded size (Hp, Wp).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    # The padded tokens are zeros that take part in attention (no mask), as in SAM.
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: stitch windows back together and drop the padding.

    Args:
        windows: [B * nW, ws, ws, C].
        window_size: ws.
        padded_size: (Hp, Wp).
        size: (H, W) before padding.

    Returns:
        [B, H, W, C].
    """
    hp, wp = padded_size
    h, w = size
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous()


class Block(nn.Module):
    """Pre-norm transformer block; attention runs inside windows when window_size > 0.

    Args:
        dim: channels C.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias on the qkv projection.
        window_size: window side; 0 means global attention over the whole grid.
        input_size: (H, W) of the full grid (used for global attention).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            size = (x.shape[1], x.shape[2])
            x, padded_size = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_size, size)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """ViT image encoder of SAM.

    Args:
        img_size: side of the square (padded) input image.
        patch_size: patch side; the embedding grid is img_size // patch_size.
        in_chans: image channels.
        embed_dim: ViT width C.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / C.
        out_chans: channels of the output embedding (the prompt dimension, 256).
        qkv_bias: bias on the qkv projections.
        window_size: window side of the windowed blocks.
        global_attn_indexes: indices of the blocks that attend over the whole grid.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, img_size, img_size] normalised image -> [B, out_chans, grid, grid]."""
        x = self.patch_embed(x) + self.pos_embed  # [B, grid, grid, C]
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
