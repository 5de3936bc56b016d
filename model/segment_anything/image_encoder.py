"""SAM's image encoder: a plain ViT with windowed and global attention and a conv neck.

The image is cut into non-overlapping patches, an absolute position embedding is added, and
transformer blocks run either inside local windows (padded to whole windows) or over the full
grid. Every attention adds SAM's decomposed relative-position bias, without ever building it for
all query-key pairs at once (`rel_pos_attention`). The neck maps the grid to ``out_chans``
channels.
"""

import math

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


def decomposed_rel_pos_logits(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of SAM's decomposed relative-position bias.

    The bias SAM adds to the logit of query (qh, qw) and key (kh, kw) is
    ``rel_h[qh, qw, kh] + rel_w[qh, qw, kw]`` with ``rel_h = q . Rh[qh - kh]`` and
    ``rel_w = q . Rw[qw - kw]``: H + W numbers per query instead of H * W.

    Args:
        q: [B, nh, H*W, hd] queries (unscaled).
        rel_pos_h, rel_pos_w: [2H-1, hd], [2W-1, hd].
        size: (H, W) of the attended grid (queries and keys).

    Returns:
        rel_h [B, nh, H, W, kH] and rel_w [B, nh, H, W, kW] (kH = H, kW = W).
    """
    h, w = size
    r_h = relative_position_table(h, rel_pos_h)  # [H, kH, hd]
    r_w = relative_position_table(w, rel_pos_w)  # [W, kW, hd]
    r_q = q.unflatten(2, (h, w))  # [B, nh, H, W, hd]
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, r_h)  # [B, nh, H, W, kH]
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, r_w)  # [B, nh, H, W, kW]
    # einsum hands back a permuted layout (nh inside H); a bias added from such views comes out
    # permuted too and costs a full copy when flattened. Contiguous terms are small (H + W
    # values per query) and make the bias come out contiguous: 4x faster to build on CPU.
    return rel_h.contiguous(), rel_w.contiguous()


# Query positions per chunk of the chunked path (whole grid rows, at least one). On this 2-core
# AVX-512 CPU, 128..512 queries per chunk ran fastest for the 64 x 64 grid (2-3x faster than the
# whole bias at once; one-row chunks were slower, with autograd most of all). A 14 x 14 window
# is one chunk: the windowed blocks ran fastest unchunked.
CHUNK_QUERIES = 256


def rel_pos_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    chunk_queries: int = CHUNK_QUERIES,
) -> torch.Tensor:
    """Attention with the decomposed bias materialised for a few query rows at a time.

    A query's softmax only needs that query's row of the bias, so cutting the queries into
    chunks is exact: each chunk is one ``scaled_dot_product_attention`` over all keys with a
    [B, nh, chunk, N] bias. The bias never exists for the whole grid (B*nh*N*N values: 1 GB for
    one ViT-H image in fp32), and a chunk's bias is still in cache when the kernel reads it.
    Without autograd, every chunk's bias is written into one reused buffer (fresh allocations
    of this size cost page faults: a quarter of the ViT-B global attention time on CPU).

    Args:
        q, k, v: [B, nh, N, hd] with N = H*W (q unscaled).
        rel_h, rel_w: [B, nh, H, W, kH], [B, nh, H, W, kW] from `decomposed_rel_pos_logits`.
        chunk_queries: about this many queries per chunk, rounded down to whole rows of W.

    Returns:
        [B, nh, N, hd].
    """
    b, nh, h, w, kh = rel_h.shape
    kw = rel_w.shape[-1]
    rows = max(1, min(h, chunk_queries // w))
    # Autograd keeps each chunk's bias (or its inputs) for the backward: no reuse when recording.
    recording = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, rel_h, rel_w))
    buffer = None if recording else rel_h.new_empty(b * nh * rows * w * kh * kw)
    outputs = []
    for top in range(0, h, rows):
        r = min(rows, h - top)
        row_h = rel_h[:, :, top : top + r, :, :, None]  # [B, nh, r, W, kH, 1]
        row_w = rel_w[:, :, top : top + r, :, None, :]  # [B, nh, r, W, 1, kW]
        if buffer is None:
            bias = row_h + row_w  # [B, nh, r, W, kH, kW]
        else:
            shape = (b, nh, r, w, kh, kw)
            bias = torch.add(row_h, row_w, out=buffer[: math.prod(shape)].view(shape))
        bias = bias.flatten(4).flatten(2, 3)  # [B, nh, r*W, N]
        queries = q[:, :, top * w : (top + r) * w]  # [B, nh, r*W, hd]
        outputs.append(F.scaled_dot_product_attention(queries, k, v, attn_mask=bias))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


def rel_pos_attention_folded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor:
    """Attention with the decomposed bias folded into the query-key dot product (no mask).

    With key n at grid cell (kh, kw) = divmod(n, W), let

        q' = [q * scale, rel_h[q, :], rel_w[q, :]]     (hd + kH + kW values per query)
        k' = [k,         onehot(kh),  onehot(kw)]      (hd + kH + kW values per key)

    then q' . k' = scale * q . k + rel_h[q, kh] + rel_w[q, kw], exactly SAM's biased logit (the
    one-hot products only pick entries; the sum is the same up to float summation order). So
    ``scaled_dot_product_attention(q', k', v, scale=1)`` needs no N x N mask and any fused kernel
    (flash, memory-efficient, cuDNN) can run it in O(N) memory, forward and backward. The cost
    is a wider q.k product ((hd + H + W) / hd: 3x for ViT-B, 2.6x for ViT-H at 1024 px).

    q, k and v are padded with zeros to one common width, a multiple of 8: the flash kernels
    need q, k and v to share the head dim, and fused kernels prefer 8-aligned widths; the zero
    columns add nothing to q' . k' and the padded output columns are dropped. (hd + kH + kW must
    stay within the kernel's head-dim limit, 256 for flash: 208 for ViT-H at 1024 px; beyond it
    SDPA falls back to another kernel.) Pre-scaling q is what SAM itself does ((q * scale) @ k^T).
    In bf16 the kernels sum the bf16 rel_h and rel_w entries in fp32, which is no coarser than
    the bf16 bias tensor it replaces (their sum rounded to bf16).

    Args:
        q, k, v: [B, nh, N, hd] with N = H*W (q unscaled).
        rel_h, rel_w: [B, nh, H, W, kH], [B, nh, H, W, kW] from `decomposed_rel_pos_logits`.

    Returns:
        [B, nh, N, hd].
    """
    b, nh, n, hd = q.shape
    grid_h, grid_w = rel_h.shape[-1], rel_w.shape[-1]  # kH, kW: the key grid
    width = hd + grid_h + grid_w
    pad = -width % 8
    key = torch.arange(n, device=q.device)
    key_tail = torch.cat(
        [
            F.one_hot(key // grid_w, grid_h),  # [N, kH]: the key's row kh
            F.one_hot(key % grid_w, grid_w),  # [N, kW]: the key's column kw
            key.new_zeros(n, pad),
        ],
        dim=-1,
    ).to(q.dtype)  # [N, kH + kW + pad]
    q_aug = torch.cat(
        [
            q * hd**-0.5,
            rel_h.flatten(2, 3),  # [B, nh, N, kH]
            rel_w.flatten(2, 3),  # [B, nh, N, kW]
            q.new_zeros(()).expand(b, nh, n, pad),
        ],
        dim=-1,
    )  # [B, nh, N, width + pad]
    k_aug = torch.cat([k, key_tail.expand(b, nh, n, -1)], dim=-1)  # [B, nh, N, width + pad]
    v_aug = F.pad(v, (0, width + pad - hd))  # [B, nh, N, width + pad]
    out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=1.0)
    return out[..., :hd]


def rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    method: str | None = None,
) -> torch.Tensor:
    """softmax(q . k * hd^-0.5 + rel_h[q, kh] + rel_w[q, kw]) v over an H x W grid.

    Two exact implementations; neither builds the [B, nh, N, N] bias:
      - "chunked" (`rel_pos_attention_chunked`): the bias a few query rows at a time;
      - "fold" (`rel_pos_attention_folded`): the bias inside a wider q.k product, no mask.
    ``method=None`` picks "chunked" on CPU, where it measured fastest (the fold's wider product
    costs more there than the bias it saves), and "fold" elsewhere: on GPUs it lets one fused
    kernel (flash or memory-efficient) run without an N x N mask, with O(N) memory in the
    backward as well, where a bias that requires grad would need an N x N gradient.

    Args:
        q, k, v: [B, nh, N, hd] with N = H*W (q unscaled).
        rel_h, rel_w: [B, nh, H, W, kH], [B, nh, H, W, kW] from `decomposed_rel_pos_logits`.
        method: "chunked", "fold" or None (by device).

    Returns:
        [B, nh, N, hd].
    """
    if method is None:
        method = "chunked" if q.device.type == "cpu" else "fold"
    if method == "chunked":
        return rel_pos_attention_chunked(q, k, v, rel_h, rel_w)
    if method == "fold":
        return rel_pos_attention_folded(q, k, v, rel_h, rel_w)
    raise ValueError(f"unknown attention method {method!r} (expected 'chunked', 'fold' or None)")


class Attention(nn.Module):
    """Multi-head self-attention over a 2-D grid with decomposed relative positions.

    Args:
        dim: channels C.
        num_heads: nh; head_dim = C / nh.
        qkv_bias: whether the qkv projection has a bias.
        input_size: (H, W) of the grid this attention sees (a window or the whole grid);
            sizes the relative-position tables.

    ``method`` (an attribute, not in the state dict) selects the implementation of
    `rel_pos_attention`; None chooses by device.
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
        self.method: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)  # [B, HW, 3, nh, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, nh, HW, hd]
        rel_h, rel_w = decomposed_rel_pos_logits(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        x = rel_pos_attention(q, k, v, rel_h, rel_w, self.method)  # [B, nh, HW, hd]
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
