"""The original LLaVA layout (liuhaotian/LLaVA-*, the released LISA checkpoints) as a
:class:`model.bases.BaseFormat`, over the code that has always served it: the legacy LLaMA
tokenizer, the ``llava_v1`` / ``llava_llama_2`` templates, ``<im_start><image><im_end>``
wrapping, the image sentinel -200 in ``input_ids`` (expanded by the model, not here) and the
instruction-masked labels of LISA's collate function.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from model.bases.detect import read_config_json
from utils.collate import mask_instruction_labels
from utils.constants import IMAGE_TOKEN_INDEX, SEG_TOKEN
from utils.conversation import build_chat_prompt, build_conversation, wrap_image_token
from utils.errors import UsageError
from utils.tokenization import add_lisa_tokens, load_tokenizer, tokenizer_image_token
from utils.transforms import ClipTransform


class OriginalLlavaFormat:
    """The llava base (see the module docstring).

    Args:
        tokenizer: :func:`utils.tokenization.load_tokenizer`'s, LISA tokens added.
        clip_transform: the vision tower's CLIP preprocessing.
        conv_type: ``llava_v1`` or ``llava_llama_2``.
        use_mm_start_end: wrap ``<image>`` in ``<im_start>`` / ``<im_end>``.
        num_image_tokens: CLIP features the sentinel stands for (256 for ViT-L/14 at 224), for
            truncating training rows to the LLM's context.
    """

    kind = "llava"
    image_block_ids = frozenset({IMAGE_TOKEN_INDEX})  # the sentinel is the image's block

    def __init__(
        self,
        *,
        tokenizer: PreTrainedTokenizerBase,
        clip_transform: ClipTransform,
        conv_type: str = "llava_v1",
        use_mm_start_end: bool = True,
        num_image_tokens: int = 256,
    ) -> None:
        self.tokenizer = tokenizer
        self.clip_transform = clip_transform
        self.conv_type = conv_type
        self.use_mm_start_end = use_mm_start_end
        self.num_image_tokens = num_image_tokens

    @classmethod
    def from_directory(
        cls,
        version_dir: str | Path,
        *,
        model_max_length: int,
        use_mm_start_end: bool = True,
        conv_type: str = "llava_v1",
        vision_tower: str | None = None,
    ) -> OriginalLlavaFormat:
        """From a LLaVA base or a LISA checkpoint in the original layout; the CLIP directory
        is ``vision_tower`` when given, else the one its config.json names.

        Raises:
            UsageError: no CLIP preprocessing or size can be found.
        """
        config = read_config_json(version_dir)
        tower = vision_tower or config.get("vision_tower") or config.get("mm_vision_tower")
        tokenizer = load_tokenizer(version_dir, model_max_length=model_max_length)
        add_lisa_tokens(tokenizer, use_mm_start_end=use_mm_start_end)
        clip_config = _clip_config(tower, config)
        return cls(
            tokenizer=tokenizer,
            clip_transform=_clip_transform(tower, clip_config, version_dir),
            conv_type=conv_type,
            use_mm_start_end=use_mm_start_end,
            num_image_tokens=_num_image_tokens(clip_config, config, version_dir),
        )

    @property
    def seg_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)

    def conversation(self, turns: Sequence[tuple[str, str]]) -> str:
        return build_conversation(turns, self.conv_type)

    def generation_prompt(self, history: Sequence[tuple[str, str]], question: str) -> str:
        """chat.py's prompt: ``<image>`` (wrapped) in front of the first user message."""
        return build_chat_prompt(question, self.conv_type, self.use_mm_start_end, list(history))

    def image_inputs(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 [H, W, 3] -> the CLIP input [3, s, s] float32."""
        return self.clip_transform(image)

    def tokenise(
        self, conversation: str, vision: object = None, *, with_labels: bool = True
    ) -> tuple[list[int], torch.Tensor | None]:
        """Ids with the sentinel -200 where the image goes and, when ``with_labels``, the
        labels of LISA's collate function (instructions ignored)."""
        text = wrap_image_token(conversation, self.use_mm_start_end)
        ids = tokenizer_image_token(text, self.tokenizer)
        if not with_labels:
            return ids, None
        return ids, mask_instruction_labels(text, ids, self.tokenizer, self.conv_type)

    def collate_vision(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """B CLIP inputs [3, s, s] -> [B, 3, s, s]."""
        return torch.stack(list(inputs), dim=0)


def _clip_config(tower: str | None, config: dict) -> dict:
    """The CLIP vision config: the tower directory's (a CLIPModel's vision part), else the
    ``vision_config`` a LISA checkpoint carries; {} when neither is there."""
    if tower and (Path(tower) / "config.json").is_file():
        tower_config = read_config_json(tower)
        return tower_config.get("vision_config") or tower_config
    return config.get("vision_config") or {}


def _clip_transform(tower: str | None, clip_config: dict, version_dir) -> ClipTransform:
    transform = ClipTransform.from_first_directory(tower)
    if transform is not None:
        return transform
    side = clip_config.get("image_size")
    if side is None:
        raise UsageError(
            f"{Path(version_dir) / 'config.json'}: no CLIP preprocessing found (no "
            f"preprocessor_config.json in {tower}, no vision_config); pass the CLIP directory"
        )
    return ClipTransform(shortest_edge=side, crop_size=(side, side))


def _num_image_tokens(clip_config: dict, config: dict, version_dir) -> int:
    if "image_size" not in clip_config or "patch_size" not in clip_config:
        raise UsageError(
            f"{Path(version_dir) / 'config.json'}: the CLIP image and patch sizes are unknown; "
            "pass the CLIP directory"
        )
    grid = clip_config["image_size"] // clip_config["patch_size"]
    with_cls = config.get("mm_vision_select_feature", "patch") == "cls_patch"
    return grid * grid + (1 if with_cls else 0)
