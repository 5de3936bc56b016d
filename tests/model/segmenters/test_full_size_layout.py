"""SAM 2.1 hiera-large at full size, built on the meta device (no memory): the names and shapes
of the published checkpoint facebook/sam2.1-hiera-large and the image model LISA loads from it.

Facts from the public release: the checkpoint is published for transformers as a video model
(config.json model_type "sam2_video", Sam2VideoModel) with a Hiera-L image encoder (width 144,
stages of 2, 6, 36 and 4 blocks, 2/4/8/16 heads, global attention in blocks 23, 33 and 43, window
sizes 8, 4, 16, 8, a 7 x 7 background position embedding), 256-wide prompt encoder and mask
decoder at 1024 px; SAM 2.1 Large has 224.4 M parameters.
"""

import json

import pytest
import torch
from transformers import Sam2Config, Sam2Model, Sam2VideoConfig, Sam2VideoModel

from model.segmenters import segmenter_ops
from model.segmenters.load import build_segmenter, segmenter_config

HIERA_LARGE = dict(
    model_type="sam2_hiera_det_model",
    hidden_size=144,
    num_attention_heads=2,
    embed_dim_per_stage=[144, 288, 576, 1152],
    num_attention_heads_per_stage=[2, 4, 8, 16],
    blocks_per_stage=[2, 6, 36, 4],
    global_attention_blocks=[23, 33, 43],
    window_positional_embedding_background_size=[7, 7],
    window_size_per_stage=[8, 4, 16, 8],
)
VISION = dict(backbone_config=HIERA_LARGE, backbone_channel_list=[1152, 576, 288, 144])
PUBLISHED_PARAMETERS_MILLIONS = 224.4
# The modules of the video model that a single image does not use.
VIDEO_ONLY_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "mask_downsample.",
    "object_pointer_proj.",
    "temporal_positional_encoding_projection_layer.",
    "memory_temporal_positional_encoding",
    "no_memory_positional_encoding",
    "no_object_pointer",
    "occlusion_spatial_embedding_parameter",
)


@pytest.fixture(scope="module")
def published() -> Sam2VideoModel:
    """The published video model's layout (SAM 2.1: temporal and occlusion embeddings on)."""
    config = Sam2VideoConfig(
        vision_config=VISION,
        enable_temporal_pos_encoding_for_object_pointers=True,
        enable_occlusion_spatial_embedding=True,
    )
    with torch.device("meta"):
        return Sam2VideoModel(config)


@pytest.fixture(scope="module")
def image_model() -> Sam2Model:
    with torch.device("meta"):
        return Sam2Model(Sam2Config(vision_config=VISION))


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in module.state_dict().items()}


def test_the_video_model_has_the_published_size(published):
    count = sum(parameter.numel() for parameter in published.parameters())
    assert round(count / 1e6, 1) == PUBLISHED_PARAMETERS_MILLIONS


def test_the_image_model_is_the_checkpoint_less_its_video_modules(published, image_model):
    checkpoint, image = shapes(published), shapes(image_model)
    assert {name: checkpoint.get(name) for name in image} == image  # same names, same shapes
    left_out = set(checkpoint) - set(image)
    assert left_out and all(name.startswith(VIDEO_ONLY_PREFIXES) for name in left_out)


def test_hiera_large_blocks_and_stages(image_model):
    image = shapes(image_model)
    prefix = "vision_encoder.backbone."
    blocks = {int(name[len(prefix) :].split(".")[1]) for name in image if ".blocks." in name}
    assert blocks == set(range(2 + 6 + 36 + 4))
    # The first block of each later stage widens the stream with a projection.
    widths = [144, 288, 576, 1152]
    stage_starts = {2: 1, 8: 2, 44: 3}
    for block, stage in stage_starts.items():
        assert image[f"{prefix}blocks.{block}.proj.weight"] == [widths[stage], widths[stage - 1]]
    projections = {name for name in image if name.endswith(".proj.weight") and ".attn." not in name}
    assert len(projections) == len(stage_starts)
    assert image[f"{prefix}blocks.47.attn.qkv.weight"] == [3 * 1152, 1152]
    assert image[f"{prefix}blocks.47.mlp.proj_in.weight"] == [4 * 1152, 1152]
    assert image[f"{prefix}patch_embed.projection.weight"] == [144, 3, 7, 7]
    assert image[f"{prefix}pos_embed"] == [1, 144, 7, 7]
    assert image[f"{prefix}pos_embed_window"] == [1, 144, 8, 8]


def test_neck_prompt_encoder_and_decoder_shapes(image_model):
    image = shapes(image_model)
    for level, channels in enumerate([1152, 576, 288, 144]):
        assert image[f"vision_encoder.neck.convs.{level}.weight"] == [256, channels, 1, 1]
    assert image["no_memory_embedding"] == [1, 1, 256]
    assert image["prompt_encoder.point_embed.weight"] == [4, 256]
    assert image["prompt_encoder.no_mask_embed.weight"] == [1, 256]
    assert image["prompt_encoder.shared_embedding.positional_embedding"] == [2, 128]
    assert image["mask_decoder.mask_tokens.weight"] == [4, 256]  # single mask + 3 multimask
    assert image["mask_decoder.obj_score_token.weight"] == [1, 256]
    # The high-resolution maps enter the upscaling at 1/8 and 1/4 of the decoder's width.
    assert image["mask_decoder.conv_s0.weight"] == [32, 256, 1, 1]
    assert image["mask_decoder.conv_s1.weight"] == [64, 256, 1, 1]
    assert image["mask_decoder.upscale_conv1.weight"] == [256, 64, 2, 2]
    assert image["mask_decoder.upscale_conv2.weight"] == [64, 32, 2, 2]


def test_operations_and_the_rebuild_from_a_lisa_config(image_model):
    ops = segmenter_ops(image_model)
    assert ops.kind == "sam2"
    assert ops.prompt_width(image_model) == 256
    assert ops.input_size(image_model) == 1024
    config = segmenter_config(image_model)
    config = json.loads(json.dumps(config))  # what a config.json holds
    with torch.device("meta"):
        rebuilt = build_segmenter("sam2", config)
    assert isinstance(rebuilt, Sam2Model)
    assert shapes(rebuilt) == shapes(image_model)


def test_a_video_config_rebuilds_the_image_model(published, image_model):
    """A module loaded from the published (video) config.json records the image model only."""
    config = json.loads(published.config.to_json_string())
    assert config["model_type"] == "sam2_video"
    with torch.device("meta"):
        loaded_like = Sam2Model(Sam2Config.from_dict(config))
        rebuilt = build_segmenter("sam2", segmenter_config(loaded_like))
    recorded = segmenter_config(loaded_like)
    assert recorded["model_type"] == "sam2" and "num_maskmem" not in recorded
    assert shapes(rebuilt) == shapes(image_model)
