import math

import torch

from model.segment_anything.transformer import Attention, TwoWayTransformer


def test_attention_with_downsampling_matches_softmax_formula():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2, downsample_rate=2)
    assert attn.q_proj.weight.shape == (8, 16) and attn.out_proj.weight.shape == (16, 8)
    q, k, v = torch.randn(3, 5, 16), torch.randn(3, 7, 16), torch.randn(3, 7, 16)

    def heads(x):  # [B, N, 8] -> [B, 2, N, 4]
        return x.view(x.shape[0], x.shape[1], 2, 4).transpose(1, 2)

    qh, kh, vh = heads(attn.q_proj(q)), heads(attn.k_proj(k)), heads(attn.v_proj(v))
    weights = (qh @ kh.transpose(-1, -2) / math.sqrt(4)).softmax(-1)
    expected = attn.out_proj((weights @ vh).transpose(1, 2).reshape(3, 5, 8))
    torch.testing.assert_close(attn(q, k, v), expected, atol=1e-6, rtol=1e-5)


def test_two_way_transformer_shapes_and_first_layer_skips_pe():
    torch.manual_seed(0)
    transformer = TwoWayTransformer(depth=2, embedding_dim=32, num_heads=4, mlp_dim=64)
    assert [layer.skip_first_layer_pe for layer in transformer.layers] == [True, False]
    image, pe, tokens = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4), torch.randn(2, 6, 32)
    with torch.no_grad():
        queries, keys = transformer(image, pe, tokens)
    assert queries.shape == (2, 6, 32)
    assert keys.shape == (2, 16, 32)


def test_two_way_transformer_is_equivariant_to_image_token_order():
    # Attention has no notion of order besides the positional encodings: permuting image tokens
    # together with their encodings permutes the keys and leaves the queries unchanged.
    torch.manual_seed(0)
    transformer = TwoWayTransformer(depth=2, embedding_dim=32, num_heads=4, mlp_dim=64)
    image, pe, tokens = torch.randn(1, 32, 1, 12), torch.randn(1, 32, 1, 12), torch.randn(1, 3, 32)
    order = torch.randperm(12)
    with torch.no_grad():
        queries, keys = transformer(image, pe, tokens)
        queries_p, keys_p = transformer(image[..., order], pe[..., order], tokens)
    torch.testing.assert_close(queries_p, queries, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(keys_p, keys[:, order], atol=1e-5, rtol=1e-5)
