"""Greedy decoding of left-padded prompts with a preallocated key/value cache.

The prompt runs through the LLM once with transformers' growing cache (the same kernels, and so
the same states, as a plain forward over the prompt); its keys and values are then copied into a
``StaticCache`` sized for the whole answer. Every later step feeds one token per row into buffers
allocated once: the cache, the attention mask (a column switched on per step) and the position
table. Nothing in a step waits for the device: whether every row has reached its end is looked
at every ``stop_check_interval`` steps (every step on the CPU, where looking is free), and the
steps run after the last row ended are cut off at the end, so the answer is the one a loop that
stops at once would give. The LM head runs on each step's last position only.

The prompt may continue keys and values computed before (a prefix several prompts about one
image share, or the last conversation about the image: ``model.prompt_prefix``); then only the
prompt's own tokens run in the first forward, after the prefix's columns of the cache.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, StaticCache

from model.prompt_prefix import CachedPrefix, PrefixPlan, PrefixRows

# Steps between two looks at whether every row has ended, on a device where looking waits for it.
DEVICE_STOP_CHECK_INTERVAL = 16
# A compiled step's cache holds a multiple of this many columns (masked where unused), so that
# the compilation serves prompts and answers of other lengths.
COMPILED_COLUMNS_MULTIPLE = 256


@dataclass
class Decoded:
    """What :func:`greedy_decode` returns."""

    tokens: torch.Tensor  # [N, T] long: new tokens, the pad id after a row's end
    # [N, S + T - 1, H]: final hidden states of the S prompt columns fed after the prefix and of
    # every new token but the last
    hidden: torch.Tensor
    # keys and values of the prefix, the prompt and every new token but the last (None: T = 0)
    cache: StaticCache | None = None
    # [N, P + S + T - 1] bool: the cache columns holding each row's tokens, in order
    columns: torch.Tensor | None = None


def greedy_decode(
    llm: nn.Module,
    lm_head: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int | None,
    pad_id: int,
    stop_check_interval: int | None = None,
    prefix: PrefixRows | None = None,
    compile_step: bool = False,
) -> Decoded:
    """Greedy answers to the left-padded prompts ``embeds`` [N, S, H] (``mask`` [N, S]).

    ``llm`` is the decoder (a ``LlamaModel``: ``embed_tokens``, ``config`` and the forward of
    transformers), ``lm_head`` maps its last hidden states to logits. The prompts continue
    ``prefix`` (keys and values computed before: ``model.prompt_prefix``) when given. A row
    stops at ``eos_id`` (None: never) and then gets ``pad_id``. T (see :class:`Decoded`): the
    steps until every row has ended, at most ``max_new_tokens``. ``compile_step``: each step
    (one token per row through the LLM and the head) runs compiled by ``torch.compile``.
    """
    num_rows, prompt_length = mask.shape
    if max_new_tokens <= 0:
        return Decoded(mask.new_zeros(num_rows, 0, dtype=torch.long), embeds[:, :0])
    if stop_check_interval is None:
        stop_check_interval = 1 if embeds.device.type == "cpu" else DEVICE_STOP_CHECK_INTERVAL
    full_mask = mask.bool() if prefix is None else torch.cat([prefix.mask, mask.bool()], dim=1)
    positions = (full_mask.long().cumsum(1) - 1).clamp(min=0)  # (N, P + S)
    fed_length = full_mask.shape[1]  # columns before the first fed new token
    columns = fed_length + max_new_tokens - 1
    if compile_step:  # other lengths of prompt and answer then reuse the compiled step
        columns = -(-columns // COMPILED_COLUMNS_MULTIPLE) * COMPILED_COLUMNS_MULTIPLE
    cache, prompt_hidden = _prefill(llm, embeds, full_mask, positions, columns, prefix)
    step_mask = _StepMask(llm.config, full_mask, columns)
    # position of the token fed at step s (s >= 1): one past the row's last prompt position
    step_positions = positions[:, -1:] + torch.arange(1, max_new_tokens, device=mask.device)
    run_step = _compiled_step(embeds.device.type) if compile_step else _decoding_step
    finished = torch.zeros(num_rows, dtype=torch.bool, device=mask.device)
    hidden_steps = [prompt_hidden]
    next_tokens = lm_head(prompt_hidden[:, -1]).argmax(-1)  # (N,)
    generated = [next_tokens.masked_fill_(finished, pad_id)]
    for step in range(1, max_new_tokens + 1):
        if eos_id is not None:
            finished |= generated[-1] == eos_id
            if step % stop_check_interval == 0 and bool(finished.all()):
                break
        if step == max_new_tokens:
            break
        hidden, next_tokens = run_step(
            llm,
            lm_head,
            generated[-1],
            step_mask.open(fed_length + step - 1),
            step_positions[:, step - 1 : step],
            cache,
        )  # (N, 1, H), (N,)
        hidden_steps.append(hidden)
        generated.append(next_tokens.masked_fill_(finished, pad_id))
    tokens = torch.stack(generated, dim=1)  # (N, T')
    steps = _steps_until_all_ended(tokens, eos_id)
    return Decoded(
        tokens=tokens[:, :steps],
        hidden=torch.cat(hidden_steps, dim=1)[:, : prompt_length + steps - 1],
        cache=cache,
        columns=step_mask.columns[:, : fed_length + steps - 1],
    )


def _decoding_step(
    llm: nn.Module,
    lm_head: nn.Module,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: StaticCache,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row [N] through the LLM (its keys and values into ``cache``) and the head:
    the final hidden states [N, 1, H] and the greedy next tokens [N]."""
    hidden = llm(
        inputs_embeds=llm.embed_tokens(tokens).unsqueeze(1),
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state  # (N, 1, H)
    return hidden, lm_head(hidden[:, -1]).argmax(-1)


@functools.cache
def _compiled_step(device_type: str) -> Callable:
    """:func:`_decoding_step` compiled (on CUDA as a CUDA graph replayed each step); its outputs
    are copied out, since a replay overwrites them."""
    mode = "reduce-overhead" if device_type == "cuda" else None
    compiled = torch.compile(_decoding_step, mode=mode, dynamic=False)

    def step(*args) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, tokens = compiled(*args)
        return hidden.clone(), tokens.clone()

    return step


def kept_prefix(decoded: Decoded, row: int, ids: torch.Tensor) -> CachedPrefix:
    """The keys and values of ``row``'s first ``len(ids)`` tokens (prefix, prompt, answer) as a
    one-row cache, to start a later prompt that begins with ``ids`` [L]."""
    if decoded.cache is None or decoded.columns is None:
        raise ValueError("nothing was decoded: no keys and values to keep")
    columns = decoded.columns[row].nonzero().flatten()[: ids.shape[0]]
    if columns.shape[0] != ids.shape[0]:
        raise ValueError(f"row {row} holds {columns.shape[0]} tokens, not {ids.shape[0]}")
    layers = [
        (layer.keys[row : row + 1, :, columns], layer.values[row : row + 1, :, columns])
        for layer in decoded.cache.layers
    ]
    return CachedPrefix(ids=ids, cache=DynamicCache(ddp_cache_data=layers))


def last_conversations(
    decoded: Decoded,
    expanded_ids: torch.Tensor,
    mask: torch.Tensor,
    plan: PrefixPlan,
    eos_id: int | None,
    num_images: int,
) -> list[CachedPrefix | None]:
    """Per image, the keys and values of its last row: the prompt (right-padded expanded
    ``expanded_ids`` [N, Lx], ``mask`` [N, Lx]) and the answer up to its end, but the last new
    token (never fed). None for an image without rows, and for every image when no step ran."""
    prefixes: list[CachedPrefix | None] = [None] * num_images
    steps = decoded.tokens.shape[1]
    if steps == 0:
        return prefixes
    lengths = mask.sum(1).tolist()
    for group, image in zip(plan.groups, plan.images, strict=True):
        row = group[-1]
        answer = decoded.tokens[row]  # (T,)
        ends = (answer == eos_id).nonzero() if eos_id is not None else answer[:0]
        fed = min(int(ends[0]) + 1 if len(ends) else steps, steps - 1)
        ids = torch.cat([expanded_ids[row, : lengths[row]], answer[:fed]])
        prefixes[image] = kept_prefix(decoded, row, ids)
    return prefixes


def _prefill(
    llm: nn.Module,
    embeds: torch.Tensor,
    full_mask: torch.Tensor,
    positions: torch.Tensor,
    columns: int,
    prefix: PrefixRows | None,
) -> tuple[StaticCache, torch.Tensor]:
    """The prompt through ``llm`` with a growing cache (after the prefix's keys and values),
    which then moves into a static cache of ``columns`` positions: the prefix, the prompt and
    the tokens fed after it. ``full_mask`` and ``positions`` [N, P + S] cover the prefix's
    columns and the prompt's."""
    growing = DynamicCache(config=llm.config) if prefix is None else prefix.past
    prompt_length = embeds.shape[1]
    hidden = llm(
        inputs_embeds=embeds,
        attention_mask=full_mask,
        position_ids=positions[:, -prompt_length:],
        past_key_values=growing,
        use_cache=True,
    ).last_hidden_state  # (N, S, H)
    cache = StaticCache(config=llm.config, max_cache_len=columns)
    for layer_idx, layer in enumerate(growing.layers):
        cache.update(layer.keys, layer.values, layer_idx)
    return cache, hidden


class _StepMask:
    """The attention mask of the decoding steps, allocated once: the prompt's padding, then one
    column per fed token, switched on in place when that token is fed. With SDPA it is handed
    over as the 4-D boolean mask SDPA takes (no mask is rebuilt per step); otherwise as the
    2-D padding mask from which transformers builds the one its attention needs."""

    def __init__(self, config, prompt_mask: torch.Tensor, length: int) -> None:
        num_rows, prompt_length = prompt_mask.shape
        self.columns = prompt_mask.new_zeros(num_rows, length, dtype=torch.bool)
        self.columns[:, :prompt_length] = prompt_mask.bool()
        self.handed_over = (
            self.columns[:, None, None, :]  # (N, 1, 1, length): a view, so it sees each column
            if config._attn_implementation == "sdpa"
            else self.columns
        )

    def open(self, column: int) -> torch.Tensor:
        self.columns[:, column] = True
        return self.handed_over


def _steps_until_all_ended(tokens: torch.Tensor, eos_id: int | None) -> int:
    """The steps a loop that stops as soon as every row has produced ``eos_id`` would run."""
    if eos_id is None:
        return tokens.shape[1]
    all_ended = (tokens == eos_id).cumsum(1).gt(0).all(0)  # (T',)
    if not bool(all_ended.any()):
        return tokens.shape[1]
    return int(all_ended.int().argmax()) + 1
