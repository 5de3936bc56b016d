"""Write a tiny random SAM 2 checkpoint laid out as facebook/sam2.1-hiera-* are for transformers.

    OUTPUT/
      config.json               model_type "sam2_video" (architectures Sam2VideoModel), as the
                                published checkpoints; with --no-video a plain "sam2" image model
      model.safetensors         random weights (the video model's memory modules included)
      preprocessor_config.json  Sam2ImageProcessor's settings at the tiny input size

It is what ``--vision_pretrained`` takes for SAM 2, at a size a CPU runs in milliseconds: a
4-stage Hiera 8 channels wide, a 64 x 64 input (--image_size), a 32-wide decoder.

    python -m tools.tiny_sam2 --output_dir runs/tiny_sam2 [--image_size 64] [--no-video]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import Sam2Config, Sam2Model, Sam2VideoConfig, Sam2VideoModel

from model.segmenters.sam2 import SAM2_IMAGE_MEAN, SAM2_IMAGE_STD, SAM2_RESCALE_FACTOR
from utils.errors import UsageError

PATCH_SIZE = 16  # the image embedding's stride: a grid of image_size / 16
DECODER_WIDTH = 32  # FPN, prompt encoder and mask decoder width (256 at full size)


def tiny_sam2_config(image_size: int = 64, *, video: bool = True) -> Sam2Config | Sam2VideoConfig:
    """A tiny SAM 2 config: Hiera stages of 1, 1, 2, 1 blocks (8 to 64 channels), global
    attention in block 3, the feature maps of a ``image_size`` input (a multiple of 32)."""
    if image_size % 32 != 0 or image_size <= 0:
        raise ValueError(f"image_size {image_size} must be a positive multiple of 32")
    backbone = dict(
        model_type="sam2_hiera_det_model",
        hidden_size=8,
        num_attention_heads=1,
        image_size=[image_size, image_size],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 2, 2],
        blocks_per_stage=[1, 1, 2, 1],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
        window_size_per_stage=[4, 2, 2, 1],
    )
    grid = image_size // PATCH_SIZE
    vision = dict(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
        fpn_hidden_size=DECODER_WIDTH,
    )
    parts = dict(
        vision_config=vision,
        prompt_encoder_config=dict(
            hidden_size=DECODER_WIDTH,
            image_size=image_size,
            patch_size=PATCH_SIZE,
            mask_input_channels=8,
        ),
        mask_decoder_config=dict(
            hidden_size=DECODER_WIDTH, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    if not video:
        return Sam2Config(**parts)
    return Sam2VideoConfig(
        **parts,
        image_size=image_size,
        memory_attention_hidden_size=DECODER_WIDTH,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_num_layers=1,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=DECODER_WIDTH,
        memory_encoder_output_channels=16,
        mask_downsampler_embed_dim=DECODER_WIDTH,
        memory_fuser_embed_dim=DECODER_WIDTH,
        memory_fuser_intermediate_dim=64,
        enable_temporal_pos_encoding_for_object_pointers=True,
        enable_occlusion_spatial_embedding=True,
    )


def preprocessor_config(image_size: int) -> dict:
    """Sam2ImageProcessor's settings, as the published preprocessor_config.json holds them."""
    mask_side = 4 * (image_size // PATCH_SIZE)  # the low-resolution masks
    return {
        "image_processor_type": "Sam2ImageProcessorFast",
        "processor_class": "Sam2VideoProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"height": image_size, "width": image_size},
        "resample": 2,  # PIL.Image.BILINEAR
        "do_rescale": True,
        "rescale_factor": SAM2_RESCALE_FACTOR,
        "do_normalize": True,
        "image_mean": list(SAM2_IMAGE_MEAN),
        "image_std": list(SAM2_IMAGE_STD),
        "do_pad": None,
        "mask_size": {"height": mask_side, "width": mask_side},
    }


def write_tiny_sam2(
    output_dir: str | os.PathLike, *, image_size: int = 64, video: bool = True, seed: int = 0
) -> Path:
    """Write the tiny checkpoint to ``output_dir`` (absent or empty), through a temporary
    folder beside it, and return its path.

    Raises:
        UsageError: ``output_dir`` exists and holds files (they are never overwritten).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UsageError(f"--output_dir {output_dir} exists and is not an empty folder")
    config = tiny_sam2_config(image_size, video=video)
    torch.manual_seed(seed)
    model = (Sam2VideoModel if video else Sam2Model)(config)
    with torch.no_grad():  # transformers starts these at zero; random, they count in tests
        for tensor in (model.no_memory_embedding, *_hiera_position_embeddings(model)):
            tensor.normal_(std=0.1)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private
        model.save_pretrained(staging)
        (staging / "preprocessor_config.json").write_text(
            json.dumps(preprocessor_config(image_size), indent=2) + "\n", encoding="utf-8"
        )
        if output_dir.exists():
            output_dir.rmdir()  # empty (checked above)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _hiera_position_embeddings(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    backbone = model.vision_encoder.backbone
    return backbone.pos_embed, backbone.pos_embed_window


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", required=True, help="the folder to create (or empty)")
    parser.add_argument(
        "--image_size", type=int, default=64, help="encoder input side, a multiple of 32"
    )
    parser.add_argument(
        "--video",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a sam2_video checkpoint as published (default), or a plain sam2 image model",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    if args.image_size <= 0 or args.image_size % 32 != 0:
        parser.error(f"--image_size {args.image_size}: expected a positive multiple of 32")
    try:
        path = write_tiny_sam2(
            args.output_dir, image_size=args.image_size, video=args.video, seed=args.seed
        )
    except UsageError as error:
        parser.error(str(error))
    print(f"--vision_pretrained={path}")


if __name__ == "__main__":
    main()
