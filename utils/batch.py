"""The batch the model reads: :class:`LisaBatch`, made by ``utils.collate.collate_fn``.

A leaf module (torch only), so that the model and the data code can both import it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Size = tuple[int, int]


@dataclass
class LisaBatch:
    """B images and the N conversations about them (N >= B: an image may have several).

    Tensors:
        images: SAM inputs, either [B, 3, H, W] uint8, image i's decoded pixels in the top-left
            ``original_sizes[i]`` corner and zeros around (what the data code makes; the model
            resizes, normalises and pads them where SAM runs: ``utils.sam_input``), or
            [B, 3, S, S] float, already resized, normalised and padded to S x S.
        images_clip: the multimodal base's vision inputs of the B images: [B, 3, s, s] float
            CLIP inputs (the original LLaVA layout, LLaVA in the Hugging Face layout), or a
            dict of tensors (Qwen2.5-VL: ``pixel_values``, ``image_grid_thw``); see
            ``model.bases``. The vision encoder runs once per image.
        input_ids: [N, L] long, right-padded with the pad id; the image sentinel
            ``IMAGE_TOKEN_INDEX`` (-200) once per row, where the image's features go.
        attention_mask: [N, L] bool, True on each row's real tokens.
        offset: [B + 1] long, cumulative conversation counts: the conversations about image i
            are rows ``offset[i]:offset[i + 1]``.
        labels: [N, L] long or None; ``IGNORE_INDEX`` (-100) where nothing is supervised.
            Training needs them; mask prediction and generation do not.
        gt_masks: None, or B float tensors [n_i, H_i, W_i]: the ground truth of image i, one
            mask per [SEG] of its conversations in reading order (0 / 1, 255 = ignore in
            validation sets that mark it).

    Sizes (one per image, ints):
        resize_sizes: (h', w'), the image's size inside the S x S SAM input.
        original_sizes: (H, W), the size predicted masks are returned at.

    Bookkeeping (not read by the model; for validation files and logs), one entry per image
    except ``conversations`` (one per row): image_paths, questions, sampled_classes,
    conversations (the texts behind ``input_ids``, image token wrapped).
    """

    images: torch.Tensor
    images_clip: torch.Tensor | dict[str, torch.Tensor]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    offset: torch.Tensor
    resize_sizes: tuple[Size, ...]
    original_sizes: tuple[Size, ...]
    labels: torch.Tensor | None = None
    gt_masks: list[torch.Tensor] | None = None
    image_paths: list[str] = field(default_factory=list)
    questions: list[Any] = field(default_factory=list)
    sampled_classes: list[Any] = field(default_factory=list)
    conversations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.resize_sizes = _sizes(self.resize_sizes, "resize_sizes")
        self.original_sizes = _sizes(self.original_sizes, "original_sizes")
        self.offset = torch.as_tensor(self.offset, dtype=torch.long)
        _check_shapes(self)

    @property
    def num_images(self) -> int:
        return self.images.shape[0]

    @property
    def num_conversations(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LisaBatch:
        """The batch on ``device`` (one copy per tensor), float images in ``dtype`` when given.

        Ids, masks and ground truth keep their dtypes; only the image inputs take the model's
        precision. uint8 SAM inputs stay uint8 (the bytes of the decoded image, no more): the
        model makes the encoder's float32 input from them on its device, then casts.
        """

        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device, non_blocking=True)

        def move_image(tensor: torch.Tensor) -> torch.Tensor:
            keep = dtype is None or not tensor.is_floating_point()
            return move(tensor) if keep else move(tensor).to(dtype)

        moved = copy.copy(self)  # not dataclasses.replace: the shapes were checked when made
        moved.images = move_image(self.images)
        moved.images_clip = (
            {name: move_image(value) for name, value in self.images_clip.items()}
            if isinstance(self.images_clip, dict)
            else move_image(self.images_clip)
        )
        moved.input_ids = move(self.input_ids)
        moved.attention_mask = move(self.attention_mask)
        moved.offset = move(self.offset)
        moved.labels = None if self.labels is None else move(self.labels)
        moved.gt_masks = None if self.gt_masks is None else [move(m) for m in self.gt_masks]
        return moved


def one_prompt_per_image_offset(num_images: int, num_rows: int) -> torch.Tensor:
    """The [B + 1] offset when row j is about image j, or every row about the one image."""
    if num_rows == num_images:
        return torch.arange(num_images + 1)
    if num_images == 1:
        return torch.tensor([0, num_rows])
    raise ValueError(
        f"{num_rows} prompts for {num_images} images: say which image each is about (offset)"
    )


def _sizes(values: Sequence[Sequence[int]], name: str) -> tuple[Size, ...]:
    sizes = []
    for value in values:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f"LisaBatch.{name}: expected (height, width) pairs, got {value!r}")
        sizes.append(pair)
    return tuple(sizes)


def _check_shapes(batch: LisaBatch) -> None:
    """One sentence for a batch whose parts disagree (instead of an error deep in the model)."""
    num_images, num_rows = batch.num_images, batch.num_conversations
    problems = []
    if isinstance(batch.images_clip, torch.Tensor) and batch.images_clip.shape[0] != num_images:
        problems.append(f"{num_images} SAM images for {batch.images_clip.shape[0]} CLIP images")
    if batch.input_ids.dim() != 2:
        problems.append(f"input_ids of shape {list(batch.input_ids.shape)}, expected [N, L]")
    for name in ("attention_mask", "labels"):
        tensor = getattr(batch, name)
        if tensor is not None and tensor.shape != batch.input_ids.shape:
            problems.append(
                f"{name} of shape {list(tensor.shape)} for input_ids of shape "
                f"{list(batch.input_ids.shape)}"
            )
    offset = batch.offset.tolist()
    if len(offset) != num_images + 1 or offset[0] != 0 or offset[-1] != num_rows:
        problems.append(f"offset {offset} for {num_images} images and {num_rows} conversations")
    for name in ("resize_sizes", "original_sizes", "gt_masks"):
        values = getattr(batch, name)
        if values is not None and len(values) != num_images:
            problems.append(f"{len(values)} {name} for {num_images} images")
    if problems:
        raise ValueError("inconsistent LisaBatch: " + "; ".join(problems))
