import numpy as np
import pytest
import torch

from model.segment_anything.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    relative_position_table,
    window_partition,
    window_unpartition,
)


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


def test_attention_matches_explicit_relative_position_formula(randomize):
    attn = randomize(Attention(dim=8, num_heads=2, qkv_bias=True, input_size=(3, 4)), seed=1)
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


@pytest.mark.reference
def test_image_embeddings_match_reference(image_embeddings, sam_parts):
    np.testing.assert_allclose(
        image_embeddings.numpy(), sam_parts["image_embeddings"], atol=1e-4, rtol=1e-4
    )
