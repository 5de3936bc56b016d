"""The LLaMA tokenizer as LISA was trained with it, and the id-level helpers built on it.

The released LISA weights were trained with transformers 4.31's *slow* ``LlamaTokenizer`` in its
``legacy=True`` mode. transformers 5 no longer has that tokenizer: ``AutoTokenizer`` turns the
sentencepiece model into a ``tokenizers`` BPE (``use_fast=False`` is ignored) that drops the dummy
prefix after added tokens and does not strip whitespace around them, so most prompts get other ids.
:class:`LegacyLlamaTokenizer` rebuilds the 4.31 behaviour on transformers 5's sentencepiece base
class, so it still is a regular transformers tokenizer (``len``, ``convert_tokens_to_ids``,
``decode``, ``add_tokens``, ``save_pretrained``, ``__call__`` with padding ...):

* every text piece between added tokens is encoded by sentencepiece on its own, with its dummy
  prefix (so ``"[SEG]."`` gives ``[SEG]``, ``▁``, ``.`` on a vocabulary without ``▁.``);
* added tokens that are not named special tokens (``[SEG]``, ``<im_start>``, ``<im_end>``) swallow the
  whitespace on both sides of themselves (``"<im_end>\\nWhat"`` loses the newline); ``<s>``, ``</s>``,
  ``<unk>`` split the text but strip nothing;
* one BOS is put in front; decoding joins added tokens with single spaces, as 4.31 did.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from transformers.tokenization_utils_base import AddedToken, PreTrainedTokenizerBase
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from utils.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    SEG_TOKEN,
)

logger = logging.getLogger(__name__)

# The named special tokens of transformers (bos, eos, unk, sep, pad, cls, mask); only these keep
# their own strip flags in 4.31, every other added token strips both sides.
_NAMED_SPECIAL_ATTRIBUTES = tuple(PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES)


def _stripping(token: str | AddedToken, special: bool) -> AddedToken:
    """The 4.31 form of a plain added token: whitespace on both sides is swallowed."""
    return AddedToken(str(token), lstrip=True, rstrip=True, normalized=False, special=special)


class LegacyLlamaTokenizer(SentencePieceBackend):
    """transformers 4.31's slow ``LlamaTokenizer`` with ``legacy=True``, on transformers 5.

    Load it with :func:`load_tokenizer`. Ids equal those the LISA/LLaVA weights were trained with.
    """

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"

    def __init__(
        self,
        vocab_file: str,
        unk_token: str | AddedToken = "<unk>",
        bos_token: str | AddedToken = "<s>",
        eos_token: str | AddedToken = "</s>",
        pad_token: str | AddedToken | None = None,
        add_bos_token: bool = True,  # one BOS in front of every encoded text
        add_eos_token: bool = False,  # LLaMA/LISA never append EOS when encoding
        clean_up_tokenization_spaces: bool = False,  # 4.31 LLaMA checkpoints store false
        **kwargs,
    ) -> None:
        if kwargs.pop("legacy", True) is False:
            # The trained ids come from legacy mode; the non-legacy ids break LISA's label masking.
            logger.warning("%s: legacy=False is ignored; LISA ids need legacy mode.", vocab_file)
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        named = {str(t) for t in (unk_token, bos_token, eos_token, pad_token) if t is not None}
        for key in _NAMED_SPECIAL_ATTRIBUTES:
            if kwargs.get(key) is not None:
                named.add(str(kwargs[key]))
        # Tokens read from added_tokens.json (or a transformers-5 config) come without 4.31's
        # implicit stripping: give it back to everything that is not a named special token.
        decoder = kwargs.pop("added_tokens_decoder", None) or {}
        kwargs["added_tokens_decoder"] = {
            int(index): token
            if str(token) in named
            else _stripping(token, getattr(token, "special", False))
            for index, token in decoder.items()
        }
        super().__init__(
            vocab_file=vocab_file,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            legacy=True,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    # --- encoding -------------------------------------------------------------------------------

    def _named_special_tokens(self) -> set[str]:
        """bos/eos/unk/pad/... as strings: the only tokens that keep their own strip flags."""
        values = (self._special_tokens_map.get(key) for key in _NAMED_SPECIAL_ATTRIBUTES)
        return {str(value) for value in values if value is not None}

    def _add_tokens(
        self, new_tokens: Sequence[str | AddedToken], special_tokens: bool = False
    ) -> int:
        # 4.31 stripped whitespace around every added token that is not a named special token,
        # whatever flags the caller gave; store that so tokenize() and saved configs agree.
        named = self._named_special_tokens()
        converted: list[str | AddedToken] = []
        for token in new_tokens:
            content = str(token)
            special = special_tokens or (isinstance(token, AddedToken) and token.special)
            if content in self._added_tokens_encoder:
                continue  # never twice, and never with other flags
            if content in named:
                converted.append(token)
            elif not special and self._in_base_vocab(content):
                continue  # 4.31 left plain tokens that are already pieces alone (no split point)
            else:
                converted.append(_stripping(token, special))
        return super()._add_tokens(converted, special_tokens=special_tokens)

    def _in_base_vocab(self, content: str) -> bool:
        return self.sp_model.IdToPiece(self.sp_model.PieceToId(content)) == content

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """``[BOS] ids [EOS]`` with BOS/EOS as configured (LLaMA: BOS only)."""
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        output = bos + token_ids_0 + eos
        if token_ids_1 is not None:
            output = output + bos + token_ids_1 + eos
        return output

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 where :meth:`build_inputs_with_special_tokens` put a BOS/EOS, else 0."""
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0 + (token_ids_1 or [])]
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        mask = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            mask = mask + bos + [0] * len(token_ids_1) + eos
        return mask

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return (int(self.add_bos_token) + int(self.add_eos_token)) * (2 if pair else 1)

    # --- decoding -------------------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Pieces to text; named special tokens are not given to sentencepiece (4.31 algorithm)."""
        special = set(self.all_special_tokens)
        out, pending, prev_is_special = "", [], False
        for i, token in enumerate(tokens):
            if token in special:
                if not prev_is_special and i != 0:
                    out += " "
                out += self.sp_model.decode(pending) + token
                pending, prev_is_special = [], True
            else:
                pending.append(token)
                prev_is_special = False
        return out + self.sp_model.decode(pending)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        spaces_between_special_tokens: bool = True,
        **kwargs,
    ) -> str:
        """4.31's decode: added tokens beyond the sentencepiece vocabulary are their own pieces,
        joined to the decoded text runs with single spaces; ``skip_special_tokens`` drops only the
        named special tokens (so ``[SEG]``, ``<im_start>``, ``<im_end>`` stay)."""
        ids = [token_ids] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        skip = set(self.convert_tokens_to_ids(sorted(self._named_special_tokens())))
        added = {t for t, i in self._added_tokens_encoder.items() if i >= self.vocab_size}
        sub_texts: list[str] = []
        run: list[str] = []
        for index in ids:
            if skip_special_tokens and index in skip:
                continue
            token = self.convert_ids_to_tokens(index)
            if token in added:
                if run:
                    sub_texts.append(self.convert_tokens_to_string(run))
                    run = []
                sub_texts.append(token)
            else:
                run.append(token)
        if run:
            sub_texts.append(self.convert_tokens_to_string(run))
        text = (" " if spaces_between_special_tokens else "").join(sub_texts)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < self.vocab_size:
            raise ValueError(
                f"token id {index} is outside the vocabulary (0..{len(self) - 1}); "
                f"remove the image sentinel {IMAGE_TOKEN_INDEX} before decoding"
            )
        return self.sp_model.IdToPiece(index)

    # --- saving ---------------------------------------------------------------------------------

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args, **kwargs
    ) -> tuple[str, ...]:
        """Save like transformers does, then mark the config the way LISA checkpoints carry it
        (``LlamaTokenizer``, ``legacy: true``, BOS/EOS flags) so :func:`load_tokenizer` reads both
        the same way."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        config_file = next(f for f in files if str(f).endswith("tokenizer_config.json"))
        with open(config_file, encoding="utf-8") as handle:
            config = json.load(handle)
        for key in ("is_local", "local_files_only"):  # where it was loaded from, not a setting
            config.pop(key, None)
        config.update(
            tokenizer_class="LlamaTokenizer",
            legacy=True,
            add_bos_token=self.add_bos_token,
            add_eos_token=self.add_eos_token,
        )
        with open(config_file, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")
        return files


def load_tokenizer(path: str | os.PathLike, model_max_length: int = 512) -> LegacyLlamaTokenizer:
    """Load the tokenizer directory of a LISA/LLaVA checkpoint with the ids it was trained with.

    Args:
        path: directory holding ``tokenizer.model`` (sentencepiece) and usually
            ``tokenizer_config.json``, ``special_tokens_map.json``, ``added_tokens.json``.
        model_max_length: longest sequence the model takes (train_ds.py / chat.py use 512).

    Returns:
        A :class:`LegacyLlamaTokenizer` padding on the right with ``pad = unk`` (as LISA sets it).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ValueError(f"Tokenizer path {str(directory)!r} is not a directory.")
    if not (directory / "tokenizer.model").is_file():
        raise ValueError(
            f"Tokenizer directory {str(directory)!r} has no sentencepiece tokenizer.model."
        )
    if model_max_length <= 0:
        raise ValueError(f"model_max_length must be positive, got {model_max_length}.")
    tokenizer = LegacyLlamaTokenizer.from_pretrained(
        str(directory), model_max_length=model_max_length, padding_side="right"
    )
    # train_ds.py and chat.py both set pad = unk, whatever the checkpoint says.
    tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def add_lisa_tokens(tokenizer: PreTrainedTokenizerBase, use_mm_start_end: bool = True) -> int:
    """Add LISA's tokens as train_ds.py does and return the id of ``[SEG]``.

    ``[SEG]`` is added with a plain ``add_tokens``; ``<im_start>``/``<im_end>`` as special tokens
    when ``use_mm_start_end``. Tokens already in the tokenizer are not added again, so the ids
    depend on the base tokenizer: resize the embeddings to ``len(tokenizer)`` afterwards.
    """
    tokenizer.add_tokens(SEG_TOKEN)
    if use_mm_start_end:
        tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
    seg_ids = tokenizer(SEG_TOKEN, add_special_tokens=False).input_ids
    if len(seg_ids) != 1:
        raise ValueError(f"{SEG_TOKEN} does not encode to a single id ({seg_ids}).")
    return seg_ids[0]


def tokenizer_image_token(prompt: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of ``prompt`` with each ``<image>`` turned into the sentinel ``IMAGE_TOKEN_INDEX``.

    The text between placeholders is encoded chunk by chunk (each with its own dummy prefix), one
    BOS goes in front (when the tokenizer adds one) and the chunks are joined by a single -200.
    """
    chunks = [
        tokenizer(chunk, add_special_tokens=False).input_ids
        for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)
    ]
    ids: list[int] = []
    if getattr(tokenizer, "add_bos_token", True) and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk)
    return ids


def decode_answer(
    output_ids: Iterable[int] | torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    *,
    clean: bool = False,
) -> str:
    """Text of generated ids.

    Args:
        output_ids: 1-D ids (a list or a [L] / [1, L] long tensor); the image sentinel may be in it.
        tokenizer: the tokenizer the ids come from.
        clean: False gives chat.py's text exactly (sentinel removed, decoded with special tokens
            kept, newlines deleted, double spaces made single). True gives readable text: the
            sentinel, special tokens and ``<im_start>``/``<im_end>`` are dropped (``[SEG]`` stays),
            newlines are kept and the ends stripped.
    """
    if isinstance(output_ids, torch.Tensor):
        if output_ids.dim() == 2 and output_ids.shape[0] == 1:
            output_ids = output_ids[0]
        if output_ids.dim() != 1:
            raise ValueError(
                f"output_ids must be 1-D (or [1, L]), got shape {tuple(output_ids.shape)}."
            )
        output_ids = output_ids.tolist()
    ids = [int(i) for i in output_ids if int(i) != IMAGE_TOKEN_INDEX]
    if not clean:
        text = tokenizer.decode(ids, skip_special_tokens=False)
        return text.replace("\n", "").replace("  ", " ")
    drop = set(tokenizer.all_special_ids)
    drop.update(tokenizer.convert_tokens_to_ids([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]))
    # a base's added special tokens (Qwen's <|image_pad|> ...) even where its tokenizer config
    # does not list them among the special tokens
    drop.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    return tokenizer.decode([i for i in ids if i not in drop], skip_special_tokens=False).strip()
