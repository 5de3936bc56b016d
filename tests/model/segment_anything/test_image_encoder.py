import copy

import numpy as np
import pytest
import torch

from model.segment_anything.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    decomposed_rel_pos_logits,
    rel_pos_attention,
    rel_pos_attention_chunked,
    relative_position_table,
    window_partition,
    window_unpartition,
)

METHODS = ("chunked", "fold")


def naive_rel_pos_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """SAM's attention written out with loops over positions: softmax(q.k*scale + bias) v."""
    b, h, w, c = x.shape
    nh = attn.num_heads
    hd = c // nh
    qkv = attn.qkv(x).reshape(b, h * w, 3, nh, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [B, nh, HW, hd]
    logits = q @ k.transpose(-1, -2) * hd**-0.5
    bias = torch.zeros_like(logits)
    for qi in range(h * w):
        qh, qw = divmod(qi, w)
        for ki in range(h * w):
            kh, kw = divmod(ki, w)
            r_h = attn.rel_pos_h[qh - kh + h - 1]
            r_w = attn.rel_pos_w[qw - kw + w - 1]
            bias[:, :, qi, ki] = q[:, :, qi] @ r_h + q[:, :, qi] @ r_w
    out = (logits + bias).softmax(-1) @ v  # [B, nh, HW, hd]
    return attn.proj(out.transpose(1, 2).reshape(b, h, w, c))


def reference_rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """softmax(q.k * scale + bias) v in float64 with the whole [B, nh, N, N] bias materialised,
    bias[(qh, qw), (kh, kw)] = q . rel_pos_h[qh - kh + H - 1] + q . rel_pos_w[qw - kw + W - 1]."""
    h, w = size
    q, k, v = q.double(), k.double(), v.double()
    row, col = torch.arange(h * w).div(w, rounding_mode="floor"), torch.arange(h * w) % w
    table = (  # [N, N, hd]: the embedding each (query, key) pair sees
        rel_pos_h.double()[row[:, None] - row[None, :] + h - 1]
        + rel_pos_w.double()[col[:, None] - col[None, :] + w - 1]
    )
    bias = torch.einsum("bnqc,qkc->bnqk", q, table)
    logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias
    return logits.softmax(-1) @ v


def materialised_bias_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """`Attention.forward` with `reference_rel_pos_attention` in place of the fast paths."""
    b, h, w, c = x.shape
    qkv = attn.qkv(x).reshape(b, h * w, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    out = reference_rel_pos_attention(*qkv.unbind(0), attn.rel_pos_h, attn.rel_pos_w, (h, w))
    return attn.proj(out.float().transpose(1, 2).reshape(b, h, w, c))


def random_attention_inputs(
    batch: int, heads: int, head_dim: int, size: tuple[int, int], seed: int = 0
) -> list[torch.Tensor]:
    """q, k, v [batch, heads, H*W, head_dim] and rel_pos_h, rel_pos_w [2H-1 | 2W-1, head_dim]."""
    generator = torch.Generator().manual_seed(seed)
    h, w = size
    q, k, v = (torch.randn(batch, heads, h * w, head_dim, generator=generator) for _ in range(3))
    rel_pos_h = torch.randn(2 * h - 1, head_dim, generator=generator) * 0.5
    rel_pos_w = torch.randn(2 * w - 1, head_dim, generator=generator) * 0.5
    return [q, k, v, rel_pos_h, rel_pos_w]


# (batch, heads, head_dim, (H, W)): a batch of 14 x 14 windows (one chunk); a non-square global
# grid that the default CHUNK_QUERIES cuts into several chunks, the last one shorter; a small
# non-square grid; a single row; a single column.
ATTENTION_CASES = [
    (3, 2, 8, (14, 14)),
    (1, 2, 16, (26, 24)),
    (2, 3, 4, (5, 7)),
    (1, 1, 4, (1, 6)),
    (1, 1, 4, (6, 1)),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("batch", "heads", "head_dim", "size"), ATTENTION_CASES)
def test_rel_pos_attention_matches_materialised_bias(method, batch, heads, head_dim, size):
    inputs = random_attention_inputs(batch, heads, head_dim, size)
    for tensor in inputs:
        tensor.requires_grad_(True)
    q, k, v, rel_pos_h, rel_pos_w = inputs
    rel_h, rel_w = decomposed_rel_pos_logits(q, rel_pos_h, rel_pos_w, size)
    out = rel_pos_attention(q, k, v, rel_h, rel_w, method)
    expected = reference_rel_pos_attention(q, k, v, rel_pos_h, rel_pos_w, size)
    assert out.shape == expected.shape == (batch, heads, size[0] * size[1], head_dim)
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=1e-5)
    # The backward (SAM's encoder is trained in some recipes) matches as well.
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, inputs, upstream)
    expected_grads = torch.autograd.grad(expected, inputs, upstream.double())
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_queries", [1, 7, 48, 10_000])
def test_chunked_attention_is_exact_for_any_chunk_size(chunk_queries):
    size = (9, 6)
    q, k, v, rel_pos_h, rel_pos_w = random_attention_inputs(2, 2, 8, size, seed=3)
    rel_h, rel_w = decomposed_rel_pos_logits(q, rel_pos_h, rel_pos_w, size)
    with torch.no_grad():  # one bias buffer reused across chunks
        out = rel_pos_attention_chunked(q, k, v, rel_h, rel_w, chunk_queries=chunk_queries)
    expected = reference_rel_pos_attention(q, k, v, rel_pos_h, rel_pos_w, size)
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=1e-5)
    # With autograd recording for v only (the bias needs no gradient but the backward of each
    # chunk still reads its bias), every chunk keeps its own bias.
    v.requires_grad_(True)
    out = rel_pos_attention_chunked(q, k, v, rel_h, rel_w, chunk_queries=chunk_queries)
    expected = reference_rel_pos_attention(q, k, v, rel_pos_h, rel_pos_w, size)
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(out, v, torch.ones_like(out))
    (expected_grad,) = torch.autograd.grad(expected, v, torch.ones_like(expected))
    torch.testing.assert_close(grad, expected_grad.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_rel_pos_attention_in_bfloat16(method):
    # Half-precision inputs (as with bf16 SAM on a GPU): one-hot keys and padding in the dtype.
    size = (12, 10)
    inputs = random_attention_inputs(1, 2, 16, size, seed=4)
    q, k, v, rel_pos_h, rel_pos_w = (t.bfloat16() for t in inputs)
    rel_h, rel_w = decomposed_rel_pos_logits(q, rel_pos_h, rel_pos_w, size)
    out = rel_pos_attention(q, k, v, rel_h, rel_w, method)
    assert out.dtype == torch.bfloat16
    expected = reference_rel_pos_attention(q, k, v, rel_pos_h, rel_pos_w, size)
    torch.testing.assert_close(out.double(), expected, atol=3e-2, rtol=3e-2)


def test_rel_pos_attention_rejects_unknown_method():
    q, k, v, rel_pos_h, rel_pos_w = random_attention_inputs(1, 1, 4, (2, 2))
    rel_h, rel_w = decomposed_rel_pos_logits(q, rel_pos_h, rel_pos_w, (2, 2))
    with pytest.raises(ValueError, match="unknown attention method"):
        rel_pos_attention(q, k, v, rel_h, rel_w, "bias")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("window_size", "input_size"), [(4, (6, 9)), (0, (6, 9)), (0, (5, 5)), (3, (3, 3))]
)
def test_block_matches_materialised_bias_attention(randomize, method, window_size, input_size):
    # Windowed (padded, non-square grid) and global (non-square and square) blocks.
    kwargs = {"dim": 16, "num_heads": 2, "mlp_ratio": 2.0, "qkv_bias": True}
    block = randomize(Block(window_size=window_size, input_size=input_size, **kwargs), seed=5)
    block.attn.method = method
    x = torch.randn(2, *input_size, 16, generator=torch.Generator().manual_seed(6))
    reference = copy.deepcopy(block)
    reference.attn.forward = lambda x: materialised_bias_attention(reference.attn, x)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_attention_matches_explicit_relative_position_formula(randomize, method):
    attn = randomize(Attention(dim=8, num_heads=2, qkv_bias=True, input_size=(3, 4)), seed=1)
    attn.method = method
    x = torch.randn(2, 3, 4, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_rel_pos_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_relative_position_table_rejects_wrong_size():
    with pytest.raises(ValueError, match="expected 7"):
        relative_position_table(4, torch.zeros(5, 2))


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 10, 9, 3)
    windows, padded = window_partition(x, 4)
    assert padded == (12, 12)
    assert windows.shape == (2 * 9, 4, 4, 3)
    # The first window is the top-left 4x4 block; padding is zero.
    torch.testing.assert_close(windows[0], x[0, :4, :4])
    assert windows[2][:, 1:].abs().sum() == 0  # third window of row 0 covers cols 8..11
    torch.testing.assert_close(window_unpartition(windows, 4, padded, (10, 9)), x)


def test_window_as_large_as_the_grid_equals_global_attention(randomize):
    kwargs = {"dim": 8, "num_heads": 2, "mlp_ratio": 2.0, "qkv_bias": True, "input_size": (6, 6)}
    global_block = randomize(Block(window_size=0, **kwargs), seed=3)
    window_block = Block(window_size=6, **kwargs)
    window_block.load_state_dict(global_block.state_dict())
    x = torch.randn(1, 6, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(window_block(x), global_block(x))


def test_windowed_block_pads_and_keeps_shape(randomize):
    block = randomize(
        Block(dim=8, num_heads=2, mlp_ratio=4.0, qkv_bias=True, window_size=4, input_size=(6, 6))
    )
    assert block.attn.rel_pos_h.shape == (7, 4)  # sized for the window, not the grid
    with torch.no_grad():
        assert block(torch.randn(2, 6, 6, 8)).shape == (2, 6, 6, 8)


def test_encoder_shapes_for_a_small_image():
    encoder = ImageEncoderViT(
        img_size=64, patch_size=16, embed_dim=16, depth=2, num_heads=2, out_chans=32,
        window_size=3, global_attn_indexes=(1,),
    )  # fmt: skip
    assert encoder.pos_embed.shape == (1, 4, 4, 16)
    assert encoder.blocks[0].attn.rel_pos_h.shape == (5, 8)
    assert encoder.blocks[1].attn.rel_pos_h.shape == (7, 8)
    with torch.no_grad():
        assert encoder(torch.randn(2, 3, 64, 64)).shape == (2, 32, 4, 4)


def test_state_dict_keeps_the_official_names():
    attn = Attention(dim=8, num_heads=2, qkv_bias=True, input_size=(3, 4))
    assert list(attn.state_dict()) == [
        "rel_pos_h", "rel_pos_w", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias"
    ]  # fmt: skip


@pytest.mark.reference
def test_image_embeddings_match_reference(image_embeddings, sam_parts):
    np.testing.assert_allclose(
        image_embeddings.numpy(), sam_parts["image_embeddings"], atol=1e-4, rtol=1e-4
    )


@pytest.mark.reference
@pytest.mark.parametrize("method", METHODS)
def test_image_embeddings_match_reference_with_each_method(
    tiny_sam, preprocess_img1, sam_parts, method
):
    encoder = copy.deepcopy(tiny_sam.image_encoder)
    for block in encoder.blocks:
        block.attn.method = method
    with torch.inference_mode():
        embeddings = encoder(torch.from_numpy(preprocess_img1["sam_input"]))
    np.testing.assert_allclose(
        embeddings.numpy(), sam_parts["image_embeddings"], atol=1e-4, rtol=1e-4
    )
