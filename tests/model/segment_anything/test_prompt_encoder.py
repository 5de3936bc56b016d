import numpy as np
import pytest
import torch

from model.segment_anything.prompt_encoder import PositionEmbeddingRandom, PromptEncoder


def make_encoder(grid: int = 8, image_size: int = 128) -> PromptEncoder:
    torch.manual_seed(0)
    encoder = PromptEncoder(
        embed_dim=32,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    return encoder.eval()


def test_dense_pe_is_fourier_features_of_cell_centres():
    pe_layer = PositionEmbeddingRandom(4)
    pe = pe_layer((2, 3))  # [8, 2, 3]
    assert pe.shape == (8, 2, 3)
    # Cell (row 1, col 2) of a 2x3 grid has its centre at x = 2.5/3, y = 1.5/2.
    xy = torch.tensor([2.5 / 3, 1.5 / 2])
    angles = 2 * torch.pi * ((2 * xy - 1) @ pe_layer.positional_encoding_gaussian_matrix)
    torch.testing.assert_close(pe[:, 1, 2], torch.cat([angles.sin(), angles.cos()]))


def test_text_embeds_are_appended_after_points_and_boxes():
    encoder = make_encoder()
    coords = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]]).expand(3, -1, -1)
    labels = torch.tensor([[1, 0]]).expand(3, -1)
    boxes = torch.tensor([[5.0, 6.0, 50.0, 60.0]]).expand(3, -1)
    text = torch.randn(3, 2, 32)
    with torch.no_grad():
        sparse, dense = encoder(points=(coords, labels), boxes=boxes, text_embeds=text)
        points_only, _ = encoder(points=(coords, labels))
    assert sparse.shape == (3, 2 + 2 + 2, 32)  # points, box corners, text
    torch.testing.assert_close(sparse[:, -2:], text)
    assert points_only.shape == (3, 3, 32)  # one padding point without a box
    torch.testing.assert_close(points_only[:, 2], encoder.not_a_point_embed.weight.expand(3, -1))
    torch.testing.assert_close(sparse[:, :2], points_only[:, :2])
    assert dense.shape == (3, 32, 8, 8)


def test_point_labels_select_their_type_embedding():
    encoder = make_encoder()
    coords = torch.tensor([[[10.0, 20.0], [10.0, 20.0]]])
    with torch.no_grad():
        sparse, _ = encoder(points=(coords, torch.tensor([[1, 0]])))
    difference = sparse[0, 0] - sparse[0, 1]
    expected = encoder.point_embeddings[1].weight[0] - encoder.point_embeddings[0].weight[0]
    torch.testing.assert_close(difference, expected)


def test_without_prompts_dense_is_the_no_mask_embedding():
    encoder = make_encoder()
    text = torch.randn(4, 1, 32)
    sparse, dense = encoder(text_embeds=text)
    assert sparse.shape == (4, 1, 32)
    assert dense.shape == (4, 32, 8, 8)
    torch.testing.assert_close(
        dense, encoder.no_mask_embed.weight.view(1, 32, 1, 1).expand_as(dense)
    )
    empty_sparse, empty_dense = encoder()
    assert empty_sparse.shape == (1, 0, 32) and empty_dense.shape == (1, 32, 8, 8)


def test_mask_prompt_is_downscaled_to_the_embedding_grid():
    encoder = make_encoder(grid=8)
    assert encoder.mask_input_size == (32, 32)
    with torch.no_grad():
        _, dense = encoder(masks=torch.randn(2, 1, 32, 32))
    assert dense.shape == (2, 32, 8, 8)
    assert not torch.allclose(dense[0], dense[1])


def test_sparse_embeddings_take_the_module_dtype():
    encoder = make_encoder().to(torch.bfloat16)
    sparse, dense = encoder(text_embeds=torch.randn(2, 1, 32))
    assert sparse.dtype == dense.dtype == torch.bfloat16
    assert encoder.get_dense_pe().dtype == torch.bfloat16


@pytest.mark.reference
def test_prompt_encoder_matches_reference(tiny_sam, sam_parts, text_embeds):
    with torch.inference_mode():
        sparse, dense = tiny_sam.prompt_encoder(
            points=None, boxes=None, masks=None, text_embeds=text_embeds
        )
        dense_pe = tiny_sam.prompt_encoder.get_dense_pe()
    tolerance = {"atol": 1e-4, "rtol": 1e-4}
    np.testing.assert_allclose(sparse.numpy(), sam_parts["sparse_embeddings"], **tolerance)
    np.testing.assert_allclose(dense.detach().numpy(), sam_parts["dense_embeddings"], **tolerance)
    np.testing.assert_allclose(dense_pe.numpy(), sam_parts["dense_pe"], **tolerance)
