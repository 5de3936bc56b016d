"""The LLaVA image path: a frozen CLIP vision tower and the projector into the LLM's space.

Module nesting follows the released checkpoints: ``vision_tower.vision_tower.vision_model.*``
(LLaVA's tower wrapper, then the Hugging Face CLIP model, whose weights live under
``vision_model``), and ``mm_projector`` is a Linear (LLaVA v1) or ``mm_projector.{0,2}``
(LLaVA-1.5's two-layer MLP).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from model.checkpoint_files import CheckpointError, listed


class VisionTowerNotFoundError(FileNotFoundError):
    """The configured CLIP vision tower can be found neither locally nor on the hub."""


class _ClipContainer(nn.Module):
    """Holds the CLIP model under the attribute name the checkpoints use (``vision_model``)."""

    def __init__(self, vision_model: CLIPVisionModel) -> None:
        super().__init__()
        self.vision_model = vision_model


class CLIPVisionTower(nn.Module):
    """CLIP image encoder returning the patch features of one hidden layer.

    Args:
        config: the CLIP vision config (image size, patch size, widths).
        select_layer: index into the hidden states (-2: output of the second-to-last layer).
        select_feature: "patch" drops the CLS token, "cls_patch" keeps it.
    """

    def __init__(
        self, config: CLIPVisionConfig, *, select_layer: int = -2, select_feature: str = "patch"
    ) -> None:
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(
                f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {select_feature!r}"
            )
        self.vision_tower = _ClipContainer(CLIPVisionModel(config))
        self.select_layer = select_layer
        self.select_feature = select_feature

    @property
    def clip(self) -> CLIPVisionModel:
        return self.vision_tower.vision_model

    @property
    def config(self) -> CLIPVisionConfig:
        return self.clip.config

    @property
    def num_patches(self) -> int:
        grid = self.config.image_size // self.config.patch_size
        return grid * grid + (1 if self.select_feature == "cls_patch" else 0)

    def load_pretrained(self, path: str) -> None:
        """Copy the weights of a CLIP directory (or hub id) into this tower.

        Raises:
            CheckpointError: the directory's tensors are incomplete or of other sizes.
        """
        loaded = load_clip_vision_model(path).state_dict()
        own = self.clip.state_dict()
        wrong = [
            name
            for name, tensor in own.items()
            if name in loaded and loaded[name].shape != tensor.shape
        ]
        if wrong:
            raise CheckpointError(
                f"the vision tower {path!r} does not fit the checkpoint's vision_config: "
                f"{wrong[0]} is {list(loaded[wrong[0]].shape)} there but "
                f"{list(own[wrong[0]].shape)} in the model ({len(wrong)} tensor(s) differ)."
            )
        self.clip.load_state_dict(loaded)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> features [B, num_patches, clip_hidden].

        Gradients flow only when the tower itself is trained (never under the original recipe).
        """
        dtype = self.clip.embeddings.patch_embedding.weight.dtype
        trained = any(p.requires_grad for p in self.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trained):
            outputs = self.clip(images.to(dtype), output_hidden_states=True)
        features = outputs.hidden_states[self.select_layer]  # (B, 1 + grid², C)
        if self.select_feature == "patch":
            features = features[:, 1:]
        return features


def build_projector(projector_type: str, in_features: int, out_features: int) -> nn.Module:
    """LLaVA's projector from CLIP width to LLM width ("linear" or "mlp{N}x_gelu")."""
    if projector_type == "linear":
        return nn.Linear(in_features, out_features)
    if projector_type.startswith("mlp") and projector_type.endswith("x_gelu"):
        depth = int(projector_type[len("mlp") : -len("x_gelu")])
        layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_features, out_features)]
        return nn.Sequential(*layers)
    raise ValueError(
        f"unknown mm_projector_type {projector_type!r}; expected 'linear' or 'mlp2x_gelu'"
    )


def load_clip_vision_config(path: str) -> CLIPVisionConfig:
    """The vision config of a CLIP directory or hub id (a full CLIPConfig is reduced to its vision part)."""
    try:
        return CLIPVisionConfig.from_pretrained(path)
    except OSError as error:
        raise VisionTowerNotFoundError(_not_found_message(path)) from error


def load_clip_vision_model(path: str) -> CLIPVisionModel:
    """A CLIP vision model with every tensor from ``path`` (a full CLIP's text half is ignored).

    Raises:
        VisionTowerNotFoundError: no CLIP directory there.
        CheckpointError: the directory's weights are corrupt, incomplete or of other sizes.
    """
    try:
        model, info = CLIPVisionModel.from_pretrained(
            path, dtype=torch.float32, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except CheckpointError:
        raise
    except OSError as error:
        raise VisionTowerNotFoundError(_not_found_message(path)) from error
    except (RuntimeError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split())[:300]
        raise CheckpointError(
            f"the vision tower {path!r} cannot be loaded: {type(error).__name__}: {reason}."
        ) from None
    missing = sorted(info["missing_keys"])
    mismatched = sorted(name for name, *_ in info["mismatched_keys"])
    if missing or mismatched:
        problem = "lacks" if missing else "has tensors of other shapes than its config.json gives:"
        raise CheckpointError(
            f"the vision tower {path!r} {problem} {listed(missing or mismatched)}."
        )
    return model


def _not_found_message(path: str) -> str:
    where = "is not a CLIP directory here" if Path(path).exists() else "does not exist here"
    return (
        f"the vision tower {path!r} named by the checkpoint's config {where} and could not be "
        "fetched from the Hugging Face hub; pass --vision-tower=PATH (vision_tower=PATH in Python) "
        "pointing to a local CLIP ViT-L/14 directory (e.g. clip-vit-large-patch14)"
    )
