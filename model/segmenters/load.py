"""Loading a segmenter from ``--vision_pretrained``, and rebuilding one from a LISA checkpoint.

What ``--vision_pretrained`` holds decides the segmenter:

- an official SAM checkpoint file (``sam_vit_h_4b8939.pth``: a plain state dict read with
  ``weights_only=True``, or a ``.safetensors`` file with the same names) -> this project's
  ``Sam``, its size read from the weights;
- a directory holding a SAM 2 checkpoint in the transformers layout (``config.json`` of
  model_type ``sam2``, or ``sam2_video`` as facebook/sam2.1-hiera-large is published, and
  ``model.safetensors``) -> transformers' ``Sam2Model`` with the image model's weights (a video
  checkpoint's memory modules are left out).

``--segmenter`` (``sam`` | ``sam2``) chooses only where a directory holds both; otherwise it is
checked against what was found. A LISA checkpoint records ``segmenter_kind`` and
``segmenter_config`` (:func:`segmenter_config`) and rebuilds the module from them
(:func:`build_segmenter`), its weights coming from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from torch import nn
from transformers import Sam2Config, Sam2Model

from model.checkpoint_files import first_line, listed, read_tensor_shapes
from model.segment_anything import (
    Sam,
    SamConfig,
    build_sam,
    load_sam_checkpoint,
    sam_config_from_state_dict,
)
from model.segmenters import SEGMENTER_KINDS
from utils.errors import CheckpointError, UsageError

SAM2_MODEL_TYPES = ("sam2", "sam2_video")  # config.json model_type of a SAM 2 directory
SAM_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
SAM2_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# The prompt encoder's random Fourier frequencies, [2, prompt width / 2].
_SAM_PROMPT_FREQUENCIES = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
# Names every official SAM checkpoint holds (sam_vit_{h,l,b}).
_OFFICIAL_SAM_NAMES = (
    "image_encoder.patch_embed.proj.weight",
    _SAM_PROMPT_FREQUENCIES,
    "mask_decoder.iou_token.weight",
)
_SAM2_IMAGE_SETTINGS = (
    "vision_config",
    "prompt_encoder_config",
    "mask_decoder_config",
    "initializer_range",
)
_SAM2_NAME = "vision_encoder.backbone.patch_embed.projection.weight"
_EXPECTED = (
    "an official SAM checkpoint file (sam_vit_h_4b8939.pth, or .safetensors with its names) or "
    "a SAM 2 directory in the transformers layout (facebook/sam2.1-hiera-large)"
)


def segmenter_kind_of(path: str | Path, segmenter: str | None = None) -> str:
    """``"sam"`` or ``"sam2"``: the segmenter ``--vision_pretrained`` ``path`` holds, with
    ``--segmenter`` (None: auto) deciding where the path holds both.

    Raises:
        UsageError: nothing of the kind there, both and no choice, or a choice not there.
    """
    kind, _ = _resolve(Path(path), segmenter)
    return kind


def load_segmenter(vision_pretrained: str | Path, segmenter: str | None = None) -> nn.Module:
    """The segmenter of ``--vision_pretrained`` in float32 and eval mode: a ``Sam`` from an
    official SAM file or a ``Sam2Model`` from a SAM 2 directory (see the module doc).

    Raises:
        UsageError: the path or ``--segmenter`` is wrong (one sentence naming the flag);
            CheckpointError (a UsageError) where the weights cannot be loaded whole.
    """
    kind, source = _resolve(Path(vision_pretrained), segmenter)
    if kind == "sam":
        return _load_official_sam(source)
    return _load_sam2(source)


def segmenter_prompt_width(vision_pretrained: str | Path, segmenter: str | None = None) -> int:
    """Width of the sparse prompts of the segmenter at ``vision_pretrained``, read from SAM 2's
    config.json or the SAM file's tensor shapes, without loading its weights.

    Raises:
        UsageError: as :func:`load_segmenter` for the path and ``--segmenter``.
    """
    kind, source = _resolve(Path(vision_pretrained), segmenter)
    if kind == "sam2":
        try:
            return int(_sam2_image_config(source).prompt_encoder_config.hidden_size)
        except (OSError, ValueError, TypeError, KeyError, StrictDataclassError) as error:
            raise CheckpointError(
                f"--vision_pretrained {source}/config.json does not describe SAM 2 "
                f"({first_line(error)})"
            ) from None
    return 2 * int(read_tensor_shapes(source)[_SAM_PROMPT_FREQUENCIES][-1])


def segmenter_config(module: nn.Module) -> dict:
    """What :func:`build_segmenter` needs to rebuild ``module`` (JSON-serialisable): a SAM's
    ``SamConfig`` fields, or SAM 2's image-model ``Sam2Config``."""
    if isinstance(module, Sam):
        config = sam_config_from_state_dict(module.state_dict())
        heads = module.mask_decoder.transformer.num_heads  # not recoverable from shapes
        return json.loads(json.dumps(dataclasses.asdict(config) | {"decoder_num_heads": heads}))
    if isinstance(module, Sam2Model):
        config = module.config  # loaded from a video config.json, it may hold video settings
        # Copies: a Sam2Config built on the module's own sub-configs would reset their settings
        # (the attention implementation among them).
        image_config = Sam2Config(
            vision_config=config.vision_config.to_dict(),
            prompt_encoder_config=config.prompt_encoder_config.to_dict(),
            mask_decoder_config=config.mask_decoder_config.to_dict(),
            initializer_range=config.initializer_range,
        )
        return json.loads(image_config.to_json_string())
    raise TypeError(f"{type(module).__name__} is not a segmenter LISA knows (SAM or SAM 2)")


def build_segmenter(kind: str, config: dict | None) -> nn.Module:
    """A segmenter of ``kind`` ("sam" | "sam2") from :func:`segmenter_config`'s dict, with
    fresh weights, in eval mode (the weights come from the checkpoint being loaded).

    Raises:
        UsageError: an unknown ``segmenter_kind`` or an unusable ``segmenter_config``.
    """
    if kind not in SEGMENTER_KINDS:
        raise UsageError(f"segmenter_kind {kind!r} is none of {', '.join(SEGMENTER_KINDS)}")
    if not isinstance(config, dict):
        raise UsageError(f"segmenter_config of a {kind} segmenter must be a JSON object")
    try:
        if kind == "sam":
            return build_sam(SamConfig(**config))
        return Sam2Model(Sam2Config.from_dict(config)).eval()
    except (TypeError, ValueError, KeyError) as error:
        raise UsageError(
            f"segmenter_config does not describe a {kind} segmenter ({first_line(error)})"
        ) from None


# ----------------------------------------------------------------------------------------------
# What a path holds


def _resolve(path: Path, segmenter: str | None) -> tuple[str, Path]:
    """The kind to load and its source (the SAM file, or the SAM 2 directory)."""
    if segmenter is not None and segmenter not in SEGMENTER_KINDS:
        raise UsageError(f"--segmenter {segmenter!r}: expected one of {', '.join(SEGMENTER_KINDS)}")
    found = _segmenters_in(path)
    if segmenter is None and len(found) > 1:
        raise UsageError(
            f"--vision_pretrained {path} holds {_describe(found)}; choose one with "
            "--segmenter sam or --segmenter sam2"
        )
    kind = segmenter if segmenter is not None else next(iter(found))
    if kind not in found:
        raise UsageError(
            f"--segmenter {kind}, but --vision_pretrained {path} holds {_describe(found)}; "
            f"drop --segmenter or pass {'a SAM 2 directory' if kind == 'sam2' else 'a SAM file'}"
        )
    sources = found[kind]
    if len(sources) > 1:
        raise UsageError(
            f"--vision_pretrained {path} holds several official SAM files "
            f"({listed(p.name for p in sources)}); pass the one to use"
        )
    return kind, sources[0]


def _segmenters_in(path: Path) -> dict[str, list[Path]]:
    """kind -> sources at ``path``: a file is one kind; a directory may hold a SAM 2 checkpoint
    and official SAM files side by side. UsageError when there is none."""
    if not path.exists():
        raise UsageError(f"--vision_pretrained {path} does not exist; expected {_EXPECTED}")
    if path.is_file() and path.name == "config.json" and _sam2_model_type(path.parent):
        return {"sam2": [path.parent]}
    if path.is_file():
        kind, source = _kind_of_file(path)
        return {kind: [source]}
    found: dict[str, list[Path]] = {}
    if _sam2_model_type(path) is not None:
        found["sam2"] = [path]
    sam_files = [file for file in _weight_files(path) if _is_official_sam_file(file)]
    if sam_files:
        found["sam"] = sam_files
    if not found:
        raise UsageError(f"--vision_pretrained {path} holds no segmenter; expected {_EXPECTED}")
    return found


def _kind_of_file(path: Path) -> tuple[str, Path]:
    """("sam", the file) or ("sam2", its directory) from a weight file's tensor names."""
    try:
        names = read_tensor_shapes(path).keys()
    except CheckpointError as error:
        raise UsageError(f"--vision_pretrained: {error}") from None
    if all(name in names for name in _OFFICIAL_SAM_NAMES):
        return "sam", path
    if _SAM2_NAME in names:
        if _sam2_model_type(path.parent) is None:
            raise UsageError(
                f"--vision_pretrained {path} holds SAM 2 weights without the config.json of "
                "their directory; pass the SAM 2 directory (config.json + model.safetensors)"
            )
        return "sam2", path.parent
    raise UsageError(
        f"--vision_pretrained {path} holds no segmenter weights (its tensors: {listed(names)}); "
        f"expected {_EXPECTED}"
    )


def _weight_files(directory: Path) -> list[Path]:
    """Files of ``directory`` that may be official SAM checkpoints (not transformers' own
    weight files, which belong to its config.json)."""
    return [
        file
        for file in sorted(directory.iterdir())
        if file.is_file()
        and file.suffix in SAM_FILE_SUFFIXES
        and not file.name.startswith(("model.", "model-", "pytorch_model"))
    ]


def _is_official_sam_file(path: Path) -> bool:
    """Whether a file beside others is an official SAM checkpoint (unreadable: no)."""
    try:
        names = read_tensor_shapes(path).keys()
    except CheckpointError:
        return False
    return all(name in names for name in _OFFICIAL_SAM_NAMES)


def _sam2_model_type(directory: Path) -> str | None:
    """The model_type of ``directory``'s config.json when it is SAM 2's, else None."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if model_type in SAM2_MODEL_TYPES else None


def _describe(found: dict[str, list[Path]]) -> str:
    """Words for what a path holds, e.g. "a SAM 2 checkpoint and an official SAM file"."""
    words = {"sam2": "a SAM 2 checkpoint", "sam": "an official SAM checkpoint"}
    return " and ".join(words[kind] for kind in SEGMENTER_KINDS[::-1] if kind in found)


# ----------------------------------------------------------------------------------------------
# Loading


def _load_official_sam(path: Path) -> Sam:
    """Our SAM, sized from the file's shapes and filled from it (strict)."""
    try:
        shapes = read_tensor_shapes(path)
        config = sam_config_from_state_dict(
            {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
        )
        sam = build_sam(config)
        load_sam_checkpoint(sam, path)
    except UsageError as error:  # CheckpointError too, which it stays
        raise type(error)(f"--vision_pretrained: {error}") from None
    except (ValueError, IndexError) as error:
        raise CheckpointError(
            f"--vision_pretrained {path} is not a usable SAM checkpoint ({first_line(error)})"
        ) from None
    return sam


def _sam2_image_config(directory: Path) -> Sam2Config:
    """The image model's config from a SAM 2 directory's config.json (a video checkpoint's
    memory settings left out)."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    return Sam2Config(**{name: config[name] for name in _SAM2_IMAGE_SETTINGS if name in config})


def _load_sam2(directory: Path) -> Sam2Model:
    """transformers' Sam2Model from a SAM 2 directory (safetensors only), all its weights there."""
    if not any((directory / name).is_file() for name in SAM2_WEIGHT_FILES):
        raise CheckpointError(
            f"--vision_pretrained {directory} holds no model.safetensors; SAM 2 weights are "
            "loaded from safetensors only"
        )
    try:
        model, info = Sam2Model.from_pretrained(
            directory,
            config=_sam2_image_config(directory),
            dtype=torch.float32,
            use_safetensors=True,
            output_loading_info=True,
        )
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        RuntimeError,
        SafetensorError,
        StrictDataclassError,
    ) as error:
        raise CheckpointError(
            f"--vision_pretrained {directory} cannot be loaded as SAM 2 ({first_line(error)})"
        ) from None
    problems = {
        what: sorted(info.get(what) or ())
        for what in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    problems = {what: keys for what, keys in problems.items() if keys}
    if problems:
        what, keys = next(iter(problems.items()))
        raise CheckpointError(
            f"--vision_pretrained {directory} does not hold a whole SAM 2 image model: "
            f"{len(keys)} {what.replace('_', ' ')} ({listed(map(str, keys))})"
        )
    return model.eval()
