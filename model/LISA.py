"""LISA: a LLaVA-style multimodal LLaMA whose ``[SEG]`` tokens are decoded into masks by SAM.

Read this file top to bottom: the model (``LisaModel``: LLaMA + CLIP tower + projector + SAM +
``text_hidden_fcs``), then the causal-LM head with one method per job over a typed batch
(:class:`utils.batch.LisaBatch`): ``forward(batch)`` gives the training losses,
``predict_masks(batch)`` the masks of the [SEG]s in the conversations (validation), and
``generate(batch)`` answers the prompts and decodes the [SEG]s of the answers. The original's
``model(**batch_dict)`` / ``model_forward`` and ``evaluate`` stay as adapters onto them. Loading
a finished checkpoint comes last (building from a LLaVA base is in ``model.builder``).

Sequence convention. ``input_ids`` carry one sentinel (``IMAGE_TOKEN_INDEX`` = -200) where the
image goes. The model expands each sentinel into as many positions as the vision tower yields
features, and every later step (image features, labels, ``[SEG]`` positions) is a mask over that
expanded sequence: there is no fixed offset anywhere.

Which hidden state feeds a mask. The released weights were trained with the hidden state of the
token *immediately before* each ``[SEG]`` (the position whose logits predict ``[SEG]``), taken
from the LLM's final RMSNorm output, then projected by ``text_hidden_fcs``. We keep that
convention, so released checkpoints give the masks they were trained to give.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, LlamaForCausalLM, LlamaModel
from transformers.utils import ModelOutput

from model.bases.detect import is_lisa_vlm
from model.checkpoint_files import (
    CheckpointError,
    listed,
    read_checkpoint_shapes,
    read_config,
    weight_files_label,
)
from model.config import LisaConfig
from model.decoding import Decoded, greedy_decode, last_conversations
from model.losses import mask_losses
from model.packing import pack_conversations, unpack_hidden
from model.prompt_prefix import (
    CachedPrefix,
    PrefixPlan,
    PrefixRows,
    plan_prefixes,
    prefix_rows,
    prompt_suffixes,
    run_prefixes,
)
from model.segment_anything import (
    SamConfig,
    build_sam,
    build_sam_vit_h,
    sam_config_from_state_dict,
)
from model.segmenters import decode_per_image
from model.vision_tower import CLIPVisionTower, build_projector, load_clip_vision_config
from utils.batch import LisaBatch, one_prompt_per_image_offset
from utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

logger = logging.getLogger(__name__)

SAM_PREFIX = "model.visual_model."
VISION_TOWER_PREFIX = "model.vision_tower."
TEXT_HIDDEN_FCS_PREFIX = "model.text_hidden_fcs."


@dataclass
class LisaOutput(ModelOutput):
    """What ``forward(batch)`` returns (dict and attribute access): the losses (scalars), and
    for inspection the LLM's last hidden states, the [SEG] positions and their projections;
    logits only with ``output_logits=True``.

    The original's ``model_forward(..., inference=True)`` returns this type too, with
    ``pred_masks`` / ``gt_masks`` (one [n_i, H_i, W_i] tensor per image, mask logits: binarise
    with ``> 0``) instead of the losses.
    """

    loss: torch.Tensor | None = None
    ce_loss: torch.Tensor | None = None
    mask_bce_loss: torch.Tensor | None = None
    mask_dice_loss: torch.Tensor | None = None
    mask_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pred_masks: list[torch.Tensor] | None = None
    gt_masks: list[torch.Tensor] | None = None
    last_hidden_state: torch.Tensor | None = None
    seg_token_mask: torch.Tensor | None = None
    pred_embeddings: torch.Tensor | None = None


@dataclass
class MaskPrediction:
    """What ``predict_masks(batch)`` returns."""

    pred_masks: list[torch.Tensor]  # B tensors [n_i, H_i, W_i] of mask logits (binarise: > 0)
    pred_embeddings: torch.Tensor  # [S, out_dim] projected [SEG] states, all rows, in order
    last_hidden_state: torch.Tensor  # [N, Lx, H] over the expanded sequences
    seg_token_mask: torch.Tensor  # [N, Lx] bool: the positions whose state feeds a mask
    logits: torch.Tensor | None = None  # [N, Lx, V], only with output_logits=True


@dataclass
class LisaGeneration:
    """What ``generate(batch)`` returns."""

    # [N, L'] long: each row's prompt ids (image sentinel included), then its new tokens up to
    # and including EOS; right-padded with the pad id
    output_ids: torch.Tensor
    pred_masks: list[torch.Tensor]  # per image [n_i, H_i, W_i] logits, one per new [SEG]
    # per image, the keys and values of its last conversation (prompt and answer) to start a
    # follow-up from; only when asked for (keep_prefixes=True)
    prefixes: list[CachedPrefix | None] | None = None


@dataclass
class MultimodalInputs:
    """A batch after image-token expansion; every tensor is [N, L_expanded, ...]."""

    expanded_ids: torch.Tensor  # (N, Lx) ids, IMAGE_TOKEN_INDEX at image-feature positions
    inputs_embeds: torch.Tensor  # (N, Lx, H)
    attention_mask: torch.Tensor  # (N, Lx) bool
    labels: torch.Tensor | None  # (N, Lx) with IGNORE_INDEX at image positions


class LisaModel(LlamaModel):
    """LLaMA decoder plus LLaVA's vision modules and LISA's SAM and ``[SEG]`` projection."""

    config_class = LisaConfig

    def __init__(self, config: LisaConfig) -> None:
        super().__init__(config)
        vision_config = _vision_config_of(config)
        self.vision_tower = CLIPVisionTower(
            vision_config,
            select_layer=config.mm_vision_select_layer,
            select_feature=config.mm_vision_select_feature,
        )
        self.mm_projector = build_projector(
            config.mm_projector_type,
            config.mm_hidden_size or vision_config.hidden_size,
            config.hidden_size,
        )
        sam_config = SamConfig(**config.sam_config) if config.sam_config else None
        self.visual_model = build_sam(sam_config) if sam_config else build_sam_vit_h()
        hidden = config.hidden_size
        # Nested Sequential only to keep the released parameter names (text_hidden_fcs.0.{0,2}).
        self.text_hidden_fcs = nn.Sequential(
            nn.Sequential(
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, config.out_dim),
                nn.Dropout(0.0),
            )
        )
        self.post_init()

    def get_image_features(self, images_clip: torch.Tensor) -> torch.Tensor:
        """images_clip [B, 3, s, s] -> projected features [B, T, hidden] (T = CLIP patches)."""
        features = self.vision_tower(images_clip)  # (B, T, C_clip), no gradient
        features = features.to(self.mm_projector_dtype)
        return self.mm_projector(features)

    @property
    def mm_projector_dtype(self) -> torch.dtype:
        return next(self.mm_projector.parameters()).dtype

    @property
    def num_image_tokens(self) -> int:
        return self.vision_tower.num_patches


class LISAForCausalLM(LlamaForCausalLM):
    """LISA with the original's public surface (``model_forward``, ``evaluate``, ``from_pretrained``)."""

    config_class = LisaConfig
    # transformers 4.31 saved the rotary inv_freq buffers; later versions compute them.
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]
    # The merge script drops the vision tower; from_pretrained then loads it from its own path.
    _keys_to_ignore_on_load_missing = [r"^model\.vision_tower\."]

    def __init__(self, config: LisaConfig) -> None:
        super().__init__(config)
        self.model = LisaModel(config)
        # One LLM row per image for the conversations about it (see model.packing): a setting
        # of the run, not of the checkpoint, so not in the config.
        self.pack_conversations = True
        self.post_init()

    def get_model(self) -> LisaModel:
        return self.model

    @property
    def seg_token_idx(self) -> int:
        if self.config.seg_token_idx is None:
            raise ValueError(
                "the [SEG] token id is unknown: pass seg_token_idx= (the tokenizer's id of [SEG])"
            )
        return self.config.seg_token_idx

    # ------------------------------------------------------------------------------------------
    # Inputs: image-token expansion

    def prepare_multimodal_inputs(
        self,
        input_ids: torch.Tensor,
        image_features: torch.Tensor,
        conversation_to_image: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MultimodalInputs:
        """Expand each image sentinel into the image's features.

        Args:
            input_ids: [N, L] right-padded ids with IMAGE_TOKEN_INDEX where the image goes.
            image_features: [B, T, H] projected features, one row per image.
            conversation_to_image: [N] index of the image each conversation is about.
            attention_mask: [N, L] (all ones when None).
            labels: [N, L] or None.
        """
        num_rows = input_ids.shape[0]
        num_tokens = image_features.shape[1]
        is_image = input_ids == IMAGE_TOKEN_INDEX  # (N, L)
        repeats = torch.where(is_image, num_tokens, 1)  # (N, L)
        lengths = repeats.sum(1).tolist()
        flat_repeats = repeats.flatten()
        pad_id = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)

        def expand(values: torch.Tensor, fill: int | bool) -> torch.Tensor:
            rows = values.flatten().repeat_interleave(flat_repeats).split(lengths)
            return nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=fill)

        expanded_ids = expand(input_ids, pad_id)  # (N, Lx)
        expanded_mask = expand(attention_mask.bool(), False)
        expanded_labels = None
        if labels is not None:
            expanded_labels = expand(labels, IGNORE_INDEX)
            expanded_labels = expanded_labels.masked_fill(
                expanded_ids == IMAGE_TOKEN_INDEX, IGNORE_INDEX
            )

        image_positions = expanded_ids == IMAGE_TOKEN_INDEX  # (N, Lx)
        embed = self.model.embed_tokens
        inputs_embeds = embed(expanded_ids.masked_fill(image_positions, pad_id))  # (N, Lx, H)
        sentinels_per_row = is_image.sum(1)  # (N,)
        if sentinels_per_row.any():
            source_images = conversation_to_image.repeat_interleave(sentinels_per_row)
            features = image_features[source_images].to(inputs_embeds.dtype)  # (n_sentinels, T, H)
            expected = int(image_positions.sum())
            if features.shape[0] * features.shape[1] != expected:
                raise ValueError(
                    f"{expected} image positions but {features.shape[0] * num_tokens} image features"
                )
            inputs_embeds = inputs_embeds.masked_scatter(image_positions.unsqueeze(-1), features)
        assert expanded_ids.shape[0] == num_rows
        return MultimodalInputs(expanded_ids, inputs_embeds, expanded_mask, expanded_labels)

    def seg_token_mask(
        self, expanded_ids: torch.Tensor, num_positions: int | None = None
    ) -> torch.Tensor:
        """[N, P] bool: positions whose hidden state feeds a mask (the token before each [SEG])."""
        num_positions = expanded_ids.shape[1] if num_positions is None else num_positions
        mask = torch.zeros(
            expanded_ids.shape[0], num_positions, dtype=torch.bool, device=expanded_ids.device
        )
        following = expanded_ids[:, 1 : num_positions + 1] == self.seg_token_idx
        mask[:, : following.shape[1]] = following
        return mask

    # ------------------------------------------------------------------------------------------
    # Masks

    def decode_masks(
        self,
        images: torch.Tensor,
        embeddings_per_image: Sequence[torch.Tensor],
        resize_list: Sequence[Sequence[int]],
        original_sizes: Sequence[Sequence[int]],
    ) -> list[torch.Tensor]:
        """SAM decoding of the projected [SEG] states.

        Args:
            images: SAM inputs: uint8 pixels [B, 3, H, W] or normalised [B, 3, S, S] (see
                :class:`LisaBatch`).
            embeddings_per_image: B tensors [n_i, out_dim].
            resize_list: (h', w') of each image inside the S x S input.
            original_sizes: (H, W) to return the masks at.
        Returns:
            B tensors [n_i, H_i, W_i] of mask logits.
        """
        return decode_per_image(
            self.model.visual_model, images, embeddings_per_image, resize_list, original_sizes
        )

    def project_seg_states(
        self,
        hidden: torch.Tensor,
        seg_mask: torch.Tensor,
        conversation_to_image: torch.Tensor,
        num_images: int,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Project the selected hidden states and group them per image, in reading order.

        Returns the [S, out_dim] projections and their split into num_images groups.
        """
        pred_embeddings = self.model.text_hidden_fcs(hidden[seg_mask])  # (S, out_dim), row-major
        per_conversation = seg_mask.sum(1)  # (N,)
        per_image = torch.zeros(num_images, dtype=torch.long, device=seg_mask.device)
        per_image.index_add_(0, conversation_to_image, per_conversation)
        return pred_embeddings, list(pred_embeddings.split(per_image.tolist()))

    # ------------------------------------------------------------------------------------------
    # The three jobs: losses (forward), masks (predict_masks), answers and their masks (generate)

    def forward(
        self,
        batch: LisaBatch | torch.Tensor | None = None,
        /,
        *,
        output_logits: bool = False,
        **kwargs,
    ):
        """``model(batch)``: the training losses of a :class:`LisaBatch`, as a :class:`LisaOutput`.

        This is what DeepSpeed's engine runs (``engine(batch)``). Two older callers reach the
        model through ``model(...)`` as well and are served here:

        - the original's dict batch, ``model(**batch_dict)`` (``images`` among the keys): see
          :meth:`model_forward`;
        - the plain language model, ``model(input_ids=...)`` without images (transformers'
          text generation, PEFT): ``LlamaForCausalLM.forward``.

        A PEFT causal-LM wrapper passes the batch as ``input_ids`` beside its own arguments set
        to None; those are dropped. Any other argument beside a batch is an error.
        """
        if batch is None and isinstance(kwargs.get("input_ids"), LisaBatch):
            batch = kwargs.pop("input_ids")
        if isinstance(batch, LisaBatch):
            _refuse_arguments(_without_unset_peft_arguments(kwargs), "forward(batch)")
            return self._training_losses(batch, output_logits=output_logits)
        if batch is not None:  # model(input_ids) positionally, as transformers allows
            kwargs["input_ids"] = batch
        if kwargs.get("images") is not None or kwargs.get("images_clip") is not None:
            kwargs = _without_unset_peft_arguments(kwargs)
            return self.model_forward(**kwargs, output_logits=output_logits)
        if output_logits:
            raise TypeError("output_logits applies to a batch with images")
        unset = (None, False)  # what a dict batch without images may hold for these keys
        given = [k for k in ORIGINAL_BATCH_ONLY_KEYS if not _is_one_of(kwargs.pop(k, None), unset)]
        _refuse_arguments(given, "model(...) without images")
        return super().forward(**kwargs)

    def predict_masks(self, batch: LisaBatch, *, output_logits: bool = False) -> MaskPrediction:
        """The masks of the [SEG]s in ``batch``'s conversations (validation, predict.py).

        ``labels`` and ``gt_masks`` are not read. Run it under ``torch.no_grad()`` unless
        gradients are wanted. Returns B mask-logit tensors [n_i, H_i, W_i] at the original sizes
        (n_i: the [SEG]s of image i's conversations) and what produced them.
        """
        return self._segmentation_pass(batch, with_labels=False, output_logits=output_logits)[0]

    def _segmentation_pass(
        self, batch: LisaBatch, *, with_labels: bool, output_logits: bool
    ) -> tuple[MaskPrediction, torch.Tensor | None]:
        """CLIP, the LLM over the expanded sequences and SAM for every [SEG]; also the labels
        on the expanded sequence when ``with_labels``."""
        num_images = batch.num_images
        conversation_to_image = conversation_image_index(
            batch.offset, batch.num_conversations, num_images, batch.input_ids.device
        )
        image_features = self.model.get_image_features(batch.images_clip)  # (B, T, H)
        inputs = self.prepare_multimodal_inputs(
            batch.input_ids,
            image_features,
            conversation_to_image,
            batch.attention_mask,
            batch.labels if with_labels else None,
        )
        hidden = self._llm_hidden_states(inputs, conversation_to_image)  # (N, Lx, H)
        seg_mask = self.seg_token_mask(inputs.expanded_ids)  # (N, Lx)
        pred_embeddings, per_image = self.project_seg_states(
            hidden, seg_mask, conversation_to_image, num_images
        )
        pred_masks = self.decode_masks(
            batch.images, per_image, batch.resize_sizes, batch.original_sizes
        )
        prediction = MaskPrediction(
            pred_masks=pred_masks,
            pred_embeddings=pred_embeddings,
            last_hidden_state=hidden,
            seg_token_mask=seg_mask,
            logits=self.lm_head(hidden) if output_logits else None,
        )
        return prediction, inputs.labels

    def _llm_hidden_states(
        self, inputs: MultimodalInputs, conversation_to_image: torch.Tensor
    ) -> torch.Tensor:
        """The LLM's last hidden states [N, Lx, H] of the expanded rows; a row's pad positions
        hold values nothing uses. With ``pack_conversations``, the conversations about one image
        run as one packed row (their shared prefix once): the same states, less work."""
        right_padded = _is_right_padded(inputs.attention_mask)
        packed = None
        if self.pack_conversations and right_padded:
            packed = pack_conversations(
                inputs.expanded_ids,
                inputs.inputs_embeds,
                inputs.attention_mask,
                conversation_to_image,
                self.config._attn_implementation,
            )
        if packed is not None:
            hidden = self.model(
                inputs_embeds=packed.inputs_embeds,
                attention_mask=packed.attention_mask,
                position_ids=packed.position_ids,
                use_cache=False,
            ).last_hidden_state  # (B', Lp, H)
            return unpack_hidden(hidden, packed)
        # Under causal attention no real token sees the trailing pads of a right-padded row, so
        # the padding mask can be dropped there and the fused causal kernel used.
        attention_mask = None if right_padded else inputs.attention_mask
        return self.model(
            inputs_embeds=inputs.inputs_embeds, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state

    def _training_losses(self, batch: LisaBatch, *, output_logits: bool) -> LisaOutput:
        """ce_w * CE(next token) + bce_w * BCE(masks) + dice_w * Dice(masks)."""
        if batch.labels is None or batch.gt_masks is None:
            raise ValueError("the training forward needs a batch with labels and gt_masks")
        prediction, labels = self._segmentation_pass(
            batch, with_labels=True, output_logits=output_logits
        )
        ce_loss = language_loss(self.lm_head, prediction.last_hidden_state, labels)
        return weighted_losses(prediction, batch.gt_masks, ce_loss, self.config)

    def generate(self, batch: LisaBatch | torch.Tensor | None = None, /, **kwargs):
        """``generate(batch, max_new_tokens=32, eos_token_id=None)`` -> :class:`LisaGeneration`.

        Greedy answers to the prompts of a :class:`LisaBatch` (``labels`` and ``gt_masks`` are
        not read), with a key/value cache; a row stops at ``eos_token_id`` (default: the
        config's; None runs every step) or after ``max_new_tokens``. Then the masks of the
        [SEG]s of each new answer, per image. A [SEG] already in the prompt (an earlier turn of
        a multi-turn conversation) gets no mask: it was answered in its own turn. The
        beginning the prompts about one image share runs through the LLM once; more options
        (a kept conversation to continue, compiled steps): :meth:`_generate_with_masks`.

        Called with anything but a LisaBatch, this is transformers' text generation of the
        plain language model (which PEFT's ``generate`` also reaches).
        """
        if isinstance(batch, LisaBatch):
            return self._generate_with_masks(batch, **kwargs)
        return super().generate(batch, **kwargs)

    @torch.no_grad()
    def _generate_with_masks(
        self,
        batch: LisaBatch,
        *,
        max_new_tokens: int = 32,
        eos_token_id: int | None = None,
        share_prefix: bool = True,
        cached_prefixes: Sequence[CachedPrefix | None] | None = None,
        keep_prefixes: bool = False,
        compile_decoding: bool = False,
    ) -> LisaGeneration:
        """See :meth:`generate`. ``share_prefix``: the beginning the prompts about one image
        share runs through the LLM once for them all. ``cached_prefixes`` (one entry per image,
        or None): keys and values of an earlier conversation about each image, which the
        prompts continue where they begin with its tokens. ``keep_prefixes``: return those of
        the last conversation about each image (prompt and answer) for the next call.
        ``compile_decoding``: each decoding step runs compiled by ``torch.compile`` (the first
        call compiles, which takes seconds to minutes)."""
        eos_id = self.config.eos_token_id if eos_token_id is None else eos_token_id
        conversation_to_image = conversation_image_index(
            batch.offset, batch.num_conversations, batch.num_images, batch.input_ids.device
        )
        image_features = self.model.get_image_features(batch.images_clip)  # (B, T, H)
        inputs = self.prepare_multimodal_inputs(
            batch.input_ids, image_features, conversation_to_image, batch.attention_mask
        )
        plan = plan_prefixes(
            inputs.expanded_ids,
            inputs.attention_mask,
            conversation_to_image,
            share=share_prefix,
            cached=cached_prefixes,
        )
        prefix, (prompt_ids, embeds, mask) = self._prefixes_and_rest(inputs, plan, cached_prefixes)
        decoded = self._greedy_decode(
            embeds, mask, max_new_tokens, eos_id, prefix, compile_step=compile_decoding
        )
        full_ids = torch.cat([prompt_ids, decoded.tokens], dim=1)  # (N, S + T)
        seg_mask = self.seg_token_mask(full_ids, num_positions=decoded.hidden.shape[1])
        seg_mask[:, : prompt_ids.shape[1] - 1] = False  # a [SEG] of the prompt is not answered
        _, per_image = self.project_seg_states(
            decoded.hidden, seg_mask, conversation_to_image, batch.num_images
        )
        pred_masks = self.decode_masks(
            batch.images, per_image, batch.resize_sizes, batch.original_sizes
        )
        output_ids = _prompts_and_answers(
            batch.input_ids, batch.attention_mask, decoded.tokens, eos_id, self._pad_id
        )
        prefixes = None
        if keep_prefixes:
            prefixes = last_conversations(
                decoded, inputs.expanded_ids, inputs.attention_mask, plan, eos_id, batch.num_images
            )
        return LisaGeneration(output_ids=output_ids, pred_masks=pred_masks, prefixes=prefixes)

    def _prefixes_and_rest(
        self,
        inputs: MultimodalInputs,
        plan: PrefixPlan,
        cached_prefixes: Sequence[CachedPrefix | None] | None,
    ) -> tuple[PrefixRows | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The ``plan``'s prefixes through the LLM (each image's once), and each row's tokens
        after its prefix: ids [N, S], embeddings [N, S, H] and mask [N, S], left-padded so that
        every row ends at column S - 1."""
        num_rows = inputs.expanded_ids.shape[0]
        prefix = prefix_rows(
            plan, run_prefixes(self.model, inputs.inputs_embeds, plan, cached_prefixes), num_rows
        )
        rest = prompt_suffixes(
            inputs.expanded_ids,
            inputs.inputs_embeds,
            inputs.attention_mask,
            plan.row_prefix_lengths(num_rows),
            self._pad_id,
        )
        return prefix, rest

    def _greedy_decode(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        max_new_tokens: int,
        eos_id: int | None,
        prefix: PrefixRows | None = None,
        *,
        compile_step: bool = False,
    ) -> Decoded:
        """Greedy steps over left-padded prompts [N, S, H] that continue ``prefix`` (see
        :func:`greedy_decode`): the new tokens [N, T] (the pad id after a row's EOS), the final
        hidden states [N, S + T - 1, H] of the prompt and of every new token but the last, and
        the cache."""
        return greedy_decode(
            self.model,
            self.lm_head,
            embeds,
            mask,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=self._pad_id,
            prefix=prefix,
            compile_step=compile_step,
        )

    @property
    def _pad_id(self) -> int:
        return self.config.pad_token_id if self.config.pad_token_id is not None else 0

    # ------------------------------------------------------------------------------------------
    # The original's surface, as adapters onto the three jobs

    def model_forward(
        self,
        images: torch.Tensor,
        images_clip: torch.Tensor,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_masks: torch.Tensor | None = None,
        offset: torch.Tensor | Sequence[int] | None = None,
        masks_list: Sequence[torch.Tensor] | None = None,
        label_list: Sequence[torch.Tensor] | None = None,
        resize_list: Sequence[Sequence[int]] | None = None,
        inference: bool = False,
        output_logits: bool = False,
        image_paths: object = None,
        questions_list: object = None,
        sampled_classes_list: object = None,
        conversation_list: object = None,
    ) -> LisaOutput:
        """The original's dict batch (``model(**batch_dict)``), onto :meth:`forward` (losses)
        or, with ``inference=True``, :meth:`predict_masks` (``pred_masks`` and ``gt_masks``).

        Args:
            images, images_clip, input_ids, labels, offset: as in :class:`LisaBatch`.
            attention_masks: :attr:`LisaBatch.attention_mask` (default: all ones).
            masks_list: :attr:`LisaBatch.gt_masks`.
            label_list: B tensors [H_i, W_i], read for their shapes only (the original sizes;
                default: the shapes of ``masks_list``).
            resize_list: :attr:`LisaBatch.resize_sizes` (default: the whole SAM input).
            output_logits: also return the full [N, Lx, V] logits.
            image_paths, questions_list, sampled_classes_list, conversation_list: the
                bookkeeping of the original collate_fn's dict, accepted and not read. Any
                other key is an error.
        """
        del image_paths, questions_list, sampled_classes_list, conversation_list
        num_images = images_clip.shape[0]
        batch = LisaBatch(
            images=images,
            images_clip=images_clip,
            input_ids=input_ids,
            attention_mask=_all_ones_unless_given(attention_masks, input_ids),
            offset=_offset_unless_given(offset, num_images, input_ids.shape[0]),
            resize_sizes=[images.shape[-2:]] * num_images if resize_list is None else resize_list,
            original_sizes=_original_sizes(label_list, masks_list),
            labels=labels,
            gt_masks=None if masks_list is None else list(masks_list),
        )
        if not inference:
            return self._training_losses(batch, output_logits=output_logits)
        prediction = self.predict_masks(batch, output_logits=output_logits)
        return LisaOutput(
            logits=prediction.logits,
            pred_masks=prediction.pred_masks,
            gt_masks=batch.gt_masks,
            last_hidden_state=prediction.last_hidden_state,
            seg_token_mask=prediction.seg_token_mask,
            pred_embeddings=prediction.pred_embeddings,
        )

    def evaluate(
        self,
        images_clip: torch.Tensor,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        resize_list: Sequence[Sequence[int]],
        original_size_list: Sequence[Sequence[int]],
        max_new_tokens: int = 32,
        tokenizer=None,
        attention_mask: torch.Tensor | None = None,
        offset: torch.Tensor | Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The original's generation call, onto :meth:`generate`.

        Args:
            images_clip: [B, 3, s, s]; images: [B, 3, S, S] (B images).
            input_ids: [N, L] prompts (right-padded when N > 1, then pass attention_mask).
            resize_list, original_size_list: per image (h', w') and (H, W).
            tokenizer: only its EOS id is read (default: the config's).
            offset: conversation -> image grouping as in :class:`LisaBatch`; by default prompt
                j is about image j (N == B) or all prompts are about the one image (B == 1).
        Returns:
            output_ids [N, L'] (each row: its prompt ids, image sentinel included, then the new
            tokens up to and including EOS; right-padded with the pad id) and per image a tensor
            [n_i, H_i, W_i] of mask logits, one per [SEG] of the new answers about that image
            (the original also decoded a [SEG] found in the prompt).
        """
        batch = LisaBatch(
            images=images,
            images_clip=images_clip,
            input_ids=input_ids,
            attention_mask=_all_ones_unless_given(attention_mask, input_ids),
            offset=_offset_unless_given(offset, images_clip.shape[0], input_ids.shape[0]),
            resize_sizes=resize_list,
            original_sizes=original_size_list,
        )
        eos_id = tokenizer.eos_token_id if tokenizer is not None else None
        result = self.generate(batch, max_new_tokens=max_new_tokens, eos_token_id=eos_id)
        return result.output_ids, result.pred_masks

    # ------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *model_args,
        config: LisaConfig | None = None,
        seg_token_idx: int | None = None,
        vision_tower: str | None = None,
        vision_pretrained: str | None = None,
        train_mask_decoder: bool | None = None,
        out_dim: int | None = None,
        use_mm_start_end: bool | None = None,
        ce_loss_weight: float | None = None,
        dice_loss_weight: float | None = None,
        bce_loss_weight: float | None = None,
        torch_dtype: torch.dtype | None = None,
        low_cpu_mem_usage: bool | None = None,
        **kwargs,
    ):
        """Load a finished LISA checkpoint, or build LISA from a LLaVA base directory.

        The keyword arguments are the original's; those given override the config. A finished
        checkpoint (its files hold SAM weights) loads as is: see :meth:`load_checkpoint`. With
        ``vision_pretrained`` (an official SAM file such as sam_vit_h_4b8939.pth), SAM comes
        from that file: :func:`model.builder.build_from_llava_base`, which also builds LISA from
        a LLaVA base (``text_hidden_fcs`` starts fresh). ``low_cpu_mem_usage`` is accepted for
        compatibility (always on).
        """
        del low_cpu_mem_usage
        path = str(pretrained_model_name_or_path)
        if is_lisa_vlm(path):  # LISA on a transformers base: its own class reads it
            from model.lisa_vlm import LisaVlm

            if torch_dtype is not None:
                kwargs["dtype"] = torch_dtype
            return LisaVlm.from_pretrained(path, *model_args, **kwargs)
        output_loading_info = kwargs.pop("output_loading_info", False)
        overrides = {
            "seg_token_idx": seg_token_idx,
            "vision_tower": vision_tower,
            "train_mask_decoder": train_mask_decoder,
            "out_dim": out_dim,
            "mm_use_im_start_end": use_mm_start_end,
            "ce_loss_weight": ce_loss_weight,
            "dice_loss_weight": dice_loss_weight,
            "bce_loss_weight": bce_loss_weight,
        }
        config = _config_with_overrides(path, config, overrides)
        if torch_dtype is not None:
            kwargs["dtype"] = torch_dtype
        if vision_pretrained is None:
            model, info = cls.load_checkpoint(path, config, *model_args, **kwargs)
        else:
            from model.builder import build_from_llava_base  # the builder imports this module

            model, info = build_from_llava_base(
                path, vision_pretrained, config, *model_args, **kwargs
            )
        model.eval()
        return (model, info) if output_loading_info else model

    @classmethod
    def load_checkpoint(
        cls, path: str, config: LisaConfig, *model_args, sam_elsewhere: bool = False, **kwargs
    ) -> tuple[LISAForCausalLM, dict]:
        """The model of ``config`` with the weights of the checkpoint directory ``path``.

        A checkpoint loads whole or not at all (CheckpointError naming the file). The documented
        absences: a vision tower the files leave out (the original merge script drops it) is
        loaded from its own path; SAM may be absent when ``sam_elsewhere`` (the caller loads it)
        or, from a LLaVA base, starts random with a warning; ``text_hidden_fcs`` absent from a
        LLaVA base starts fresh. SAM's size is read from its weights when the config lacks it.

        Returns the model (in train mode) and transformers' loading info.
        """
        shapes = checkpoint_tensor_shapes(path)
        has_sam = any(name.startswith(SAM_PREFIX) for name in shapes)
        has_tower = any(name.startswith(VISION_TOWER_PREFIX) for name in shapes)
        if config.sam_config is None and has_sam:
            config.sam_config = sam_config_from_shapes(shapes, SAM_PREFIX, weight_files_label(path))
        if config.vision_config is None:
            if config.vision_tower_path is None:
                raise ValueError(
                    f"{path}/config.json names no vision tower (mm_vision_tower); pass vision_tower=PATH"
                )
            config.vision_config = load_clip_vision_config(config.vision_tower_path).to_dict()
        absent = [] if has_tower else [r"^model\.vision_tower\."]
        if sam_elsewhere:
            absent.append(r"^model\.visual_model\.")
        model, info = cls._load_with_transformers(path, config, absent, *model_args, **kwargs)
        _check_loaded_keys(info, shapes, weight_files_label(path))
        if not has_tower:
            model.model.vision_tower.load_pretrained(config.vision_tower_path)
        if not has_sam and not sam_elsewhere:
            logger.warning(
                "%s holds no SAM weights and no vision_pretrained was given: SAM is random", path
            )
            sam_config = config.sam_config
            fresh = build_sam(SamConfig(**sam_config)) if sam_config else build_sam_vit_h()
            model.model.visual_model.load_state_dict(fresh.state_dict())
        info["missing_keys"] = {
            key for key in info["missing_keys"] if not key.startswith(VISION_TOWER_PREFIX)
        }
        return model, info

    @classmethod
    def _load_with_transformers(
        cls, path: str, config: LisaConfig, absent: list[str], *model_args, **kwargs
    ) -> tuple[LISAForCausalLM, dict]:
        """transformers' loading, told which tensors may be absent (regular expressions)."""
        with _patched_class_attribute(cls, "_keys_to_ignore_on_load_missing", absent):
            try:
                return super().from_pretrained(
                    path,
                    *model_args,
                    config=config,
                    output_loading_info=True,
                    ignore_mismatched_sizes=True,  # reported by _check_loaded_keys instead
                    **kwargs,
                )
            except (OSError, RuntimeError, ValueError, TypeError) as error:
                if isinstance(error, CheckpointError):
                    raise
                raise CheckpointError(
                    f"cannot build the model of {path}/config.json or load "
                    f"{weight_files_label(path)}: {type(error).__name__}: {_one_line(error)}."
                ) from None


def language_loss(lm_head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of hidden states [N, L, H] against labels [N, L]; the head
    runs only where a label is supervised."""
    targets = labels[:, 1:]  # (N, L-1)
    supervised = targets != IGNORE_INDEX
    logits = lm_head(hidden[:, :-1][supervised])  # (n_supervised, V)
    return F.cross_entropy(logits.float(), targets[supervised])


def weighted_losses(
    prediction: MaskPrediction, gt_masks: Sequence[torch.Tensor], ce_loss: torch.Tensor, config
) -> LisaOutput:
    """ce_w * CE + bce_w * BCE(masks) + dice_w * Dice(masks) (weights from ``config``), with
    the prediction's states for inspection.

    Raises:
        ValueError: an image whose [SEG] count differs from its number of ground-truth masks.
    """
    pred_masks = prediction.pred_masks
    for i, (pred, gt) in enumerate(zip(pred_masks, gt_masks, strict=True)):
        if pred.shape[0] != gt.shape[0]:
            raise ValueError(
                f"image {i}: {pred.shape[0]} [SEG] tokens in its conversations but "
                f"{gt.shape[0]} ground-truth masks"
            )
    output = LisaOutput(
        last_hidden_state=prediction.last_hidden_state,
        seg_token_mask=prediction.seg_token_mask,
        pred_embeddings=prediction.pred_embeddings,
        logits=prediction.logits,
    )
    output.ce_loss = ce_loss * config.ce_loss_weight
    bce, dice = mask_losses(
        pred_masks, [gt.to(pred.dtype) for pred, gt in zip(pred_masks, gt_masks, strict=True)]
    )
    # Every decoded mask (even of an image without [SEG]) and every projected [SEG] state
    # joins the loss with weight zero: all ranks then run the same backward, which ZeRO-3's
    # collective weight gathering needs, whatever the data of each rank.
    anchor = (
        sum((m.float().sum() for m in pred_masks), prediction.pred_embeddings.float().sum()) * 0.0
    )
    if bce is None:  # no mask in this batch
        bce = dice = anchor
    output.mask_bce_loss = bce * config.bce_loss_weight
    output.mask_dice_loss = dice * config.dice_loss_weight
    output.mask_loss = output.mask_bce_loss + output.mask_dice_loss
    output.loss = output.ce_loss + output.mask_loss + anchor
    return output


def checkpoint_tensor_shapes(path: str) -> dict[str, torch.Size]:
    """name -> shape of every tensor in the checkpoint directory; CheckpointError when none."""
    shapes = read_checkpoint_shapes(path)
    if not shapes:
        raise CheckpointError(
            f"{path} holds no weights (model.safetensors, pytorch_model.bin or a sharded "
            "index of them)."
        )
    return shapes


def _config_with_overrides(path: str, config: LisaConfig | None, overrides: dict) -> LisaConfig:
    """A copy of ``config`` (default: the directory's config.json) with the given values set;
    the caller's config is never mutated."""
    if config is None:
        config = read_config(path)
    config = LisaConfig.from_dict(config.to_dict())
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    return config


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sam_config_from_shapes(shapes: dict[str, torch.Size], prefix: str, source: Path) -> dict:
    """SAM's sizes read from the shapes of its weights; a file they do not fit is named."""
    try:
        return dataclasses.asdict(sam_config_from_state_dict(_as_meta(shapes), prefix=prefix))
    except (KeyError, ValueError, IndexError, TypeError, RuntimeError) as error:
        raise CheckpointError(
            f"{source} does not hold a usable SAM: its tensors do not fit any SAM layout "
            f"({type(error).__name__}: {_one_line(error)})."
        ) from None


def _check_loaded_keys(info: dict, shapes: dict[str, torch.Size], source: Path) -> None:
    """Raise unless every tensor the model needs came from the file (a checkpoint loads whole
    or not at all). Allowed: the absences declared to transformers (vision tower, SAM from
    vision_pretrained), rotary inv_freq buffers, and on a LLaVA base (no SAM, no
    text_hidden_fcs in the file) the LISA parts that start fresh."""
    is_llava_base = not any(
        name.startswith((SAM_PREFIX, TEXT_HIDDEN_FCS_PREFIX)) for name in shapes
    )
    fresh_on_base = (SAM_PREFIX, TEXT_HIDDEN_FCS_PREFIX) if is_llava_base else ()
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(fresh_on_base))
    unexpected = sorted(k for k in info["unexpected_keys"] if not k.endswith("rotary_emb.inv_freq"))
    mismatched = sorted(info.get("mismatched_keys") or [])
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} tensor(s) the model needs ({listed(missing)})")
    if unexpected:
        problems.append(
            f"holds {len(unexpected)} tensor(s) the model does not have ({listed(unexpected)})"
        )
    if mismatched:
        name, file_shape, model_shape = mismatched[0]
        others = f"{listed(key for key, *_ in mismatched)}; " if len(mismatched) > 1 else ""
        problems.append(
            f"holds {len(mismatched)} tensor(s) of another shape than config.json gives "
            f"({others}{name} is {list(file_shape)} in the file, {list(model_shape)} in the "
            "model)"
        )
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not fit the model its config.json describes: "
            + "; ".join(problems)
            + "."
        )


def _vision_config_of(config: LisaConfig) -> CLIPVisionConfig:
    if config.vision_config is not None:
        return CLIPVisionConfig.from_dict(config.vision_config)
    if config.vision_tower_path is None:
        raise ValueError("the config names no vision tower (mm_vision_tower / vision_tower)")
    return load_clip_vision_config(config.vision_tower_path)


@contextlib.contextmanager
def _patched_class_attribute(cls: type, name: str, value) -> Iterator[None]:
    """Set a class attribute for the duration of a block (transformers reads it while loading)."""
    had_own, previous = name in cls.__dict__, cls.__dict__.get(name)
    setattr(cls, name, value)
    try:
        yield
    finally:
        if had_own:
            setattr(cls, name, previous)
        else:
            delattr(cls, name)


def _as_meta(shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}


def conversation_image_index(
    offset: torch.Tensor | Sequence[int] | None,
    num_rows: int,
    num_images: int,
    device: torch.device,
) -> torch.Tensor:
    """[N] image index of each conversation, from the cumulative ``offset`` [B + 1]."""
    if offset is None:
        if num_images == num_rows:
            return torch.arange(num_rows, device=device)
        if num_images == 1:
            return torch.zeros(num_rows, dtype=torch.long, device=device)
        raise ValueError(f"{num_rows} conversations for {num_images} images: pass offset")
    offset = torch.as_tensor(offset, device=device).long()
    counts = offset[1:] - offset[:-1]
    if len(counts) != num_images or int(offset[-1]) != num_rows or int(offset[0]) != 0:
        raise ValueError(
            f"offset {offset.tolist()} does not fit {num_images} images and {num_rows} conversations"
        )
    return torch.repeat_interleave(torch.arange(num_images, device=device), counts)


def _is_right_padded(mask: torch.Tensor) -> bool:
    """True when every row of the [N, L] mask is ones followed by zeros."""
    lengths = mask.sum(1, keepdim=True)
    positions = torch.arange(mask.shape[1], device=mask.device)
    return bool(torch.equal(mask.bool(), positions < lengths))


# Keys of the original's dict batch that mean nothing to the plain language model.
ORIGINAL_BATCH_ONLY_KEYS = (
    "images",
    "images_clip",
    "attention_masks",
    "offset",
    "masks_list",
    "label_list",
    "resize_list",
    "inference",
    "image_paths",
    "questions_list",
    "sampled_classes_list",
    "conversation_list",
)
# What PEFT's causal-LM wrapper passes to the model's forward whether or not it was given.
PEFT_FORWARD_ARGUMENTS = (
    "attention_mask",
    "inputs_embeds",
    "labels",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "task_ids",
)


def _without_unset_peft_arguments(kwargs: dict) -> dict:
    return {
        key: value
        for key, value in kwargs.items()
        if not (key in PEFT_FORWARD_ARGUMENTS and value is None)
    }


def _is_one_of(value: object, constants: tuple) -> bool:
    return any(value is constant for constant in constants)


def _refuse_arguments(names, where: str) -> None:
    names = sorted(names)
    if names:
        raise TypeError(f"{where} got unexpected argument(s): {', '.join(names)}")


def _all_ones_unless_given(mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask


def _original_sizes(
    label_list: Sequence[torch.Tensor] | None, masks_list: Sequence[torch.Tensor] | None
) -> list[tuple[int, ...]]:
    """The (H, W) of each image from the original's label maps, else its ground-truth masks."""
    if label_list is not None:
        return [tuple(label.shape[-2:]) for label in label_list]
    if masks_list is not None:
        return [tuple(m.shape[-2:]) for m in masks_list]
    raise ValueError("model_forward needs label_list or masks_list for the mask sizes")


def _offset_unless_given(
    offset: torch.Tensor | Sequence[int] | None, num_images: int, num_rows: int
) -> torch.Tensor | Sequence[int]:
    return one_prompt_per_image_offset(num_images, num_rows) if offset is None else offset


def _prompts_and_answers(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    new_tokens: torch.Tensor,
    eos_id: int | None,
    pad_id: int,
) -> torch.Tensor:
    """[N, L'] rows: the prompt's real ids, then the new tokens up to and including EOS."""
    rows = []
    for prompt, length, tokens in zip(
        input_ids, attention_mask.sum(1).tolist(), new_tokens, strict=True
    ):
        ended = (tokens == eos_id).nonzero() if eos_id is not None else []
        if len(ended):
            tokens = tokens[: int(ended[0]) + 1]
        rows.append(torch.cat([prompt[:length], tokens]))
    return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id)
