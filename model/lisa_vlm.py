"""LISA on a transformers multimodal base: LLaVA in the Hugging Face layout or Qwen2.5-VL, with
the official SAM or SAM 2 as the segmenter.

The recipe is LISA's (``model/LISA.py`` explains it): the final hidden state of the token before
each ``[SEG]`` goes through ``text_hidden_fcs`` into the segmenter's mask decoder as a sparse
prompt. What differs is where the image enters: the base's own vision encoder and projector run
once per image (``get_image_features``), and transformers' own forward of the base scatters the
features into the image tokens that :class:`model.bases.BaseFormat` wrote into ``input_ids``
(``mm_encoder_outputs``), so nothing of the base is written again here.

Parameter names: ``base.*`` (the base's own model, e.g. ``base.model.language_model.layers.0``),
``visual_model.*`` (the segmenter's own names), ``text_hidden_fcs.0.{0,2}``. ``config.json``
records the base (``base_kind``, ``base_config``) and the segmenter (``segmenter_kind``,
``segmenter_config``), so a saved directory loads with ``from_pretrained`` alone.

The three jobs take a :class:`utils.batch.LisaBatch`, as in ``model/LISA.py``: ``forward`` (the
losses), ``predict_masks`` and ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import GENERATION_CONFIG_NAME

from model.LISA import (
    LisaGeneration,
    LisaOutput,
    MaskPrediction,
    conversation_image_index,
    language_loss,
    weighted_losses,
)
from model.segmenters import decode_per_image, segmenter_ops
from utils.batch import LisaBatch

# base kind -> (config class, model class) of transformers
BASE_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "llava_hf": (LlavaConfig, LlavaForConditionalGeneration),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
}


@strict
class LisaVlmConfig(PretrainedConfig):
    """A LISA checkpoint on a transformers base: the base's whole config nested, the segmenter's."""

    model_type = "lisa_vlm"

    base_kind: str = "llava_hf"  # a key of BASE_CLASSES
    base_config: dict | None = None  # the base's own config.json fields
    segmenter_kind: str = "sam"  # "sam" (official SAM) or "sam2" (transformers' Sam2Model)
    segmenter_config: dict | None = None  # what model.segmenters.load.build_segmenter reads
    out_dim: int = 256  # [SEG] prompt width: the segmenter's sparse prompt width
    seg_token_idx: int | None = None  # id of [SEG] in the base's tokenizer
    train_mask_decoder: bool = True
    ce_loss_weight: float = 1.0
    dice_loss_weight: float = 0.5
    bce_loss_weight: float = 2.0
    initializer_range: float = 0.02

    def base_pretrained_config(self) -> PretrainedConfig:
        """The base's config object (a LlavaConfig or a Qwen2_5_VLConfig)."""
        if self.base_kind not in BASE_CLASSES:
            raise ValueError(
                f"config.json: base_kind {self.base_kind!r} is none of {sorted(BASE_CLASSES)}"
            )
        config_class = BASE_CLASSES[self.base_kind][0]
        fields = {k: v for k, v in (self.base_config or {}).items() if k != "model_type"}
        return config_class(**fields)


class LisaVlm(PreTrainedModel):
    """LISA over a transformers multimodal base and a promptable segmenter."""

    config_class = LisaVlmConfig
    base_model_prefix = "lisa"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(
        self,
        config: LisaVlmConfig,
        base: PreTrainedModel | None = None,
        segmenter: nn.Module | None = None,
    ) -> None:
        super().__init__(config)
        if base is None:
            base = BASE_CLASSES[config.base_kind][1](config.base_pretrained_config())
        self.base = base
        if segmenter is None:
            from model.segmenters.load import build_segmenter

            segmenter = build_segmenter(config.segmenter_kind, config.segmenter_config)
        self.visual_model = segmenter
        hidden = self.text_config.hidden_size
        # Nested Sequential: the same parameter names as the original layout (text_hidden_fcs.0.*).
        self.text_hidden_fcs = nn.Sequential(
            nn.Sequential(
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, config.out_dim),
                nn.Dropout(0.0),
            )
        )
        self.text_hidden_fcs.apply(self._init_weights)
        self.pack_conversations = False  # packing is implemented for the original layout only
        self.post_init()

    # ------------------------------------------------------------------------------------------
    # Building and saving

    @classmethod
    def from_parts(
        cls,
        base: PreTrainedModel,
        base_kind: str,
        segmenter: nn.Module,
        *,
        seg_token_idx: int,
        out_dim: int | None = None,
        loss_weights: tuple[float, float, float] = (1.0, 0.5, 2.0),
        train_mask_decoder: bool = True,
    ) -> LisaVlm:
        """LISA from a loaded base and segmenter; ``text_hidden_fcs`` starts fresh.

        ``out_dim`` defaults to the segmenter's prompt width (and must equal it)."""
        from model.segmenters.load import segmenter_config

        ops = segmenter_ops(segmenter)
        width = ops.prompt_width(segmenter)
        if out_dim is not None and out_dim != width:
            raise ValueError(f"out_dim {out_dim} differs from the segmenter's prompt width {width}")
        ce, dice, bce = loss_weights
        config = LisaVlmConfig(
            base_kind=base_kind,
            base_config=base.config.to_dict(),
            segmenter_kind=ops.kind,
            segmenter_config=segmenter_config(segmenter),
            out_dim=width,
            seg_token_idx=seg_token_idx,
            train_mask_decoder=train_mask_decoder,
            ce_loss_weight=ce,
            dice_loss_weight=dice,
            bce_loss_weight=bce,
        )
        config.dtype = base.config.dtype
        model = cls(config, base=base, segmenter=segmenter)
        return model.to(base.dtype)

    def sync_base_config(self) -> None:
        """Write the base's current config (e.g. its vocabulary after resizing) into ours."""
        self.config.base_config = self.base.config.to_dict()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save, plus the base's generation config (its end-of-turn tokens)."""
        self.sync_base_config()
        result = super().save_pretrained(save_directory, *args, **kwargs)
        self.base.generation_config.save_pretrained(save_directory)
        return result

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' load, plus the base's generation config saved beside the weights."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        path = Path(str(args[0] if args else kwargs["pretrained_model_name_or_path"]))
        if (path / GENERATION_CONFIG_NAME).is_file():
            model.base.generation_config = GenerationConfig.from_pretrained(path)
        return loaded

    def resize_token_embeddings(self, new_num_tokens: int, *args, **kwargs):
        embeddings = self.base.resize_token_embeddings(new_num_tokens, *args, **kwargs)
        self.sync_base_config()
        return embeddings

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def _init_weights(self, module: nn.Module) -> None:
        """Only LISA's own layers: the base and the segmenter come initialised or loaded."""
        own = any(m is module for m in self.text_hidden_fcs.modules())
        if own and isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)

    @property
    def text_config(self) -> PretrainedConfig:
        return self.base.config.get_text_config()

    @property
    def lm_head(self) -> nn.Module:
        return self.base.lm_head

    @property
    def seg_token_idx(self) -> int:
        if self.config.seg_token_idx is None:
            raise ValueError("the [SEG] token id is unknown: config.json has no seg_token_idx")
        return self.config.seg_token_idx

    @property
    def image_token_id(self) -> int:
        return self.base.config.image_token_id

    # ------------------------------------------------------------------------------------------
    # The LLM over the conversations

    def image_features(self, vision: torch.Tensor | dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Projected features of each image, [T_i, H] (the base's own vision encoder and
        projector, once per image; without gradient when none of their weights trains)."""
        kwargs = dict(vision) if isinstance(vision, dict) else {"pixel_values": vision}
        encoder = self.base.model
        vision_modules = [m for name, m in encoder.named_children() if name != "language_model"]
        trains = any(p.requires_grad for m in vision_modules for p in m.parameters())
        dtype = self.get_input_embeddings().weight.dtype
        kwargs["pixel_values"] = kwargs["pixel_values"].to(dtype)
        with torch.set_grad_enabled(trains and torch.is_grad_enabled()):
            features = encoder.get_image_features(**kwargs, return_dict=True).pooler_output
        return list(features)

    def _row_inputs(
        self,
        input_ids: torch.Tensor,
        vision: torch.Tensor | dict[str, torch.Tensor],
        conversation_to_image: torch.Tensor,
    ) -> dict:
        """The base model's keyword arguments for N rows: each row gets its image's features
        (computed once per image), and Qwen2.5-VL its image grid and token types (mrope)."""
        features = self.image_features(vision)
        rows = conversation_to_image.tolist()
        kwargs = {
            "mm_encoder_outputs": {
                "image": BaseModelOutputWithPooling(pooler_output=[features[i] for i in rows])
            }
        }
        if self.config.base_kind == "qwen2_5_vl":
            kwargs["image_grid_thw"] = vision["image_grid_thw"][conversation_to_image]
            kwargs["mm_token_type_ids"] = (input_ids == self.image_token_id).int()
        return kwargs

    def llm_hidden_states(
        self, batch: LisaBatch, conversation_to_image: torch.Tensor
    ) -> torch.Tensor:
        """The base LLM's final (normalised) hidden states [N, L, H] of the batch's rows."""
        return self.base.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask.long(),
            use_cache=False,
            **self._row_inputs(batch.input_ids, batch.images_clip, conversation_to_image),
        ).last_hidden_state

    def seg_token_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """[N, L] bool: the positions whose state feeds a mask (the token before each [SEG])."""
        mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[:, :-1] = ids[:, 1:] == self.seg_token_idx
        return mask

    def project_seg_states(
        self,
        states: torch.Tensor,
        per_conversation: torch.Tensor,
        conversation_to_image,
        num_images,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """[S, out_dim] projections of the selected states [S, H] (in row order), per image."""
        projected = self.text_hidden_fcs(states)
        per_image = torch.zeros(num_images, dtype=torch.long, device=states.device)
        per_image.index_add_(0, conversation_to_image, per_conversation.to(states.device))
        return projected, list(projected.split(per_image.tolist()))

    # ------------------------------------------------------------------------------------------
    # Masks

    def decode_masks(
        self,
        images: torch.Tensor,
        prompts_per_image: Sequence[torch.Tensor],
        resize_sizes: Sequence[Sequence[int]],
        original_sizes: Sequence[Sequence[int]],
    ) -> list[torch.Tensor]:
        """The segmenter's masks [n_i, H_i, W_i] (logits) of each image's prompts.

        An image without prompts is skipped, unless several ranks train: every rank must then run
        the trained modules (the decoder, on a blank embedding when the encoder is frozen)."""
        return decode_per_image(
            self.visual_model, images, prompts_per_image, resize_sizes, original_sizes
        )

    # ------------------------------------------------------------------------------------------
    # The three jobs

    def forward(self, batch: LisaBatch | None = None, /, *, output_logits: bool = False, **kwargs):
        """``model(batch)``: the training losses of a :class:`LisaBatch` (a :class:`LisaOutput`)."""
        if batch is None and isinstance(kwargs.get("input_ids"), LisaBatch):
            batch = kwargs.pop("input_ids")
        unexpected = sorted(k for k, v in kwargs.items() if v is not None)
        if not isinstance(batch, LisaBatch) or unexpected:
            raise TypeError(
                "LisaVlm.forward takes one LisaBatch"
                + (f" (unexpected: {', '.join(unexpected)})" if unexpected else "")
            )
        return self._training_losses(batch, output_logits=output_logits)

    def predict_masks(self, batch: LisaBatch, *, output_logits: bool = False) -> MaskPrediction:
        """The masks of the [SEG]s in the batch's conversations (validation, predict.py)."""
        return self._segmentation_pass(batch, output_logits=output_logits)

    def _segmentation_pass(self, batch: LisaBatch, *, output_logits: bool) -> MaskPrediction:
        conversation_to_image = conversation_image_index(
            batch.offset, batch.num_conversations, batch.num_images, batch.input_ids.device
        )
        hidden = self.llm_hidden_states(batch, conversation_to_image)  # (N, L, H)
        seg_mask = self.seg_token_mask(batch.input_ids) & batch.attention_mask.bool()
        embeddings, per_image = self.project_seg_states(
            hidden[seg_mask], seg_mask.sum(1), conversation_to_image, batch.num_images
        )
        pred_masks = self.decode_masks(
            batch.images, per_image, batch.resize_sizes, batch.original_sizes
        )
        return MaskPrediction(
            pred_masks=pred_masks,
            pred_embeddings=embeddings,
            last_hidden_state=hidden,
            seg_token_mask=seg_mask,
            logits=self.lm_head(hidden) if output_logits else None,
        )

    def _training_losses(self, batch: LisaBatch, *, output_logits: bool) -> LisaOutput:
        """ce_w * CE(next token) + bce_w * BCE(masks) + dice_w * Dice(masks), as LISA."""
        if batch.labels is None or batch.gt_masks is None:
            raise ValueError("the training forward needs a batch with labels and gt_masks")
        prediction = self._segmentation_pass(batch, output_logits=output_logits)
        ce_loss = language_loss(self.lm_head, prediction.last_hidden_state, batch.labels)
        return weighted_losses(prediction, batch.gt_masks, ce_loss, self.config)

    @torch.no_grad()
    def generate(
        self,
        batch: LisaBatch,
        *,
        max_new_tokens: int = 32,
        eos_token_id: int | Sequence[int] | None = None,
    ) -> LisaGeneration:
        """Greedy answers to the batch's prompts (the base's own generation, key/value cache),
        then the masks of the [SEG]s of each new answer, per image."""
        conversation_to_image = conversation_image_index(
            batch.offset, batch.num_conversations, batch.num_images, batch.input_ids.device
        )
        eos_ids = sorted({*_as_id_list(eos_token_id), *self.end_of_answer_ids()})
        pad_id = self._pad_id(eos_ids)
        ids, mask = _left_padded(batch.input_ids, batch.attention_mask.bool(), pad_id)
        result = self.base.generate(
            input_ids=ids,
            attention_mask=mask.long(),
            **self._generation_vision_inputs(batch.images_clip, ids, conversation_to_image),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_ids or None,
            pad_token_id=pad_id,
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
        new_tokens = result.sequences[:, ids.shape[1] :]  # (N, T)
        # the state of the position that produced new token k: step k's last position
        states = torch.stack([step[-1][:, -1] for step in result.hidden_states], dim=1)
        is_seg = new_tokens[:, : states.shape[1]] == self.seg_token_idx  # (N, T)
        _, per_image = self.project_seg_states(
            states[is_seg], is_seg.sum(1), conversation_to_image, batch.num_images
        )
        pred_masks = self.decode_masks(
            batch.images, per_image, batch.resize_sizes, batch.original_sizes
        )
        output_ids = _prompts_and_answers(
            batch.input_ids, batch.attention_mask, new_tokens, eos_ids, pad_id
        )
        return LisaGeneration(output_ids=output_ids, pred_masks=pred_masks)

    def end_of_answer_ids(self) -> list[int]:
        """The ids that end an answer: the base's generation config's EOS (its end-of-turn
        token(s)), else the language model's EOS."""
        ids = _as_id_list(self.base.generation_config.eos_token_id)
        return ids or _as_id_list(self.text_config.eos_token_id)

    def _generation_vision_inputs(
        self, vision, input_ids: torch.Tensor, conversation_to_image: torch.Tensor
    ) -> dict:
        """The base's own generate() arguments for the rows' images (one copy per row)."""
        rows = conversation_to_image
        if self.config.base_kind != "qwen2_5_vl":
            return {"pixel_values": vision[rows]}
        grid = vision["image_grid_thw"]
        patches = list(vision["pixel_values"].split(grid.prod(-1).tolist()))
        return {
            "pixel_values": torch.cat([patches[i] for i in rows.tolist()]),
            "image_grid_thw": grid[rows],
            "mm_token_type_ids": (input_ids == self.image_token_id).int(),
        }

    def _pad_id(self, eos_ids: list[int]) -> int:
        pad = self.text_config.pad_token_id
        if pad is None:
            pad = getattr(self.base.generation_config, "pad_token_id", None)
        if pad is None:
            pad = eos_ids[0] if eos_ids else 0
        return int(pad)


def _as_id_list(ids: int | Sequence[int] | None) -> list[int]:
    if ids is None:
        return []
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


def _left_padded(
    ids: torch.Tensor, mask: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows [N, L] moved to the right end (generation appends after real tokens)."""
    shifts = (mask.shape[1] - mask.sum(1)).tolist()
    ids = torch.stack([row.roll(s) for row, s in zip(ids, shifts, strict=True)])
    mask = torch.stack([row.roll(s) for row, s in zip(mask, shifts, strict=True)])
    return ids.masked_fill(~mask, pad_id), mask


def _prompts_and_answers(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    new_tokens: torch.Tensor,
    eos_ids: list[int],
    pad_id: int,
) -> torch.Tensor:
    """[N, L'] rows: the prompt's real ids, then the new tokens up to and including an EOS."""
    rows = []
    eos = torch.tensor(eos_ids, dtype=new_tokens.dtype, device=new_tokens.device)
    for prompt, length, tokens in zip(
        input_ids, attention_mask.sum(1).tolist(), new_tokens, strict=True
    ):
        ended = torch.isin(tokens, eos).nonzero() if len(eos_ids) else []
        if len(ended):
            tokens = tokens[: int(ended[0]) + 1]
        rows.append(torch.cat([prompt[:length], tokens]))
    return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id)


# transformers' Auto classes read a saved directory (AutoConfig, AutoTokenizer, AutoModel).
AutoConfig.register(LisaVlmConfig.model_type, LisaVlmConfig, exist_ok=True)
AutoModel.register(LisaVlmConfig, LisaVlm, exist_ok=True)
