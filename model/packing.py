"""Packed conversations: one LLM row per image, the image's shared prefix computed once.

With several conversations about one image, each unpacked row repeats the same prefix (system
prompt, ``USER:``, the image's features, the image end token). A packed row holds that prefix
once, then each conversation's own tokens one after the other. The attention mask lets every
conversation see the prefix and, causally, itself but no other conversation; each token keeps
the position it has in its unpacked row. So every token gets the hidden state it has unpacked
(the prefix's tokens see only the prefix in both layouts), and :func:`unpack_hidden` puts the
states back in the unpacked [N, Lx] layout, where labels, [SEG] positions and masks are read
exactly as before.

The mask is a 4-D ``[B, 1, Lp, Lp]`` tensor, which transformers' LLaMA takes as given: boolean
(True: may attend) for SDPA, additive float (0 / most negative) for the eager attention. Other
attention kernels (flash attention, flex attention) get the unpacked rows. (FlexAttention's block
masks would skip the blocks no conversation sees, but torch 2.13 has no FlexAttention backward
on a CPU; there the SDPA kernel with this mask costs about what the causal kernel costs on the
same row.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.profiler import record_function

# Attention implementations that accept a custom 4-D tensor mask, and the mask each takes.
BOOLEAN_MASK_ATTENTION = ("sdpa",)
ADDITIVE_MASK_ATTENTION = ("eager",)
PREFIX, PADDING = -1, -2  # segment ids of the packed positions that belong to no conversation


@dataclass
class PackedRows:
    """The LLM's input for the packed layout, and the way back to the unpacked rows."""

    inputs_embeds: torch.Tensor  # [B', Lp, H], one row per image with conversations
    attention_mask: torch.Tensor  # [B', 1, Lp, Lp], bool or additive float
    position_ids: torch.Tensor  # [B', Lp], each token's position in its unpacked row
    unpack_index: torch.Tensor  # [N, Lx] long: packed position (flattened) of each token
    num_tokens: int  # real tokens through the LLM (the unpacked rows: attention_mask.sum())


def shared_prefix_lengths(
    expanded_ids: torch.Tensor, attention_mask: torch.Tensor, groups: list[list[int]]
) -> list[int]:
    """For each group of rows, how many leading real tokens all its rows share."""
    first = torch.tensor([g[0] for g in groups for _ in g], device=expanded_ids.device)
    rows = torch.tensor([r for g in groups for r in g], device=expanded_ids.device)
    same = (
        (expanded_ids[rows] == expanded_ids[first]) & attention_mask[rows] & attention_mask[first]
    )
    common = same.long().cumprod(1).sum(1).tolist()  # per row: common length with its first
    lengths, start = [], 0
    for group in groups:
        lengths.append(min(common[start : start + len(group)]))
        start += len(group)
    return lengths


def conversation_groups(conversation_to_image: torch.Tensor) -> list[list[int]]:
    """Row indices of each image's conversations (images without one left out)."""
    groups: dict[int, list[int]] = {}
    for row, image in enumerate(conversation_to_image.tolist()):
        groups.setdefault(image, []).append(row)
    return list(groups.values())


@record_function("lisa::pack_conversations")  # a named scope in profiles (benchmarks)
def pack_conversations(
    expanded_ids: torch.Tensor,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    conversation_to_image: torch.Tensor,
    attn_implementation: str | None,
) -> PackedRows | None:
    """The packed layout of right-padded expanded rows [N, Lx], or None where packing saves
    nothing (no image with two conversations sharing a prefix) or the attention kernel takes
    no 4-D mask."""
    if attn_implementation not in BOOLEAN_MASK_ATTENTION + ADDITIVE_MASK_ATTENTION:
        return None
    groups = conversation_groups(conversation_to_image)
    prefixes = shared_prefix_lengths(expanded_ids, attention_mask.bool(), groups)
    if not any(len(g) > 1 and p > 0 for g, p in zip(groups, prefixes, strict=True)):
        return None
    lengths = attention_mask.sum(1).tolist()
    num_rows, row_width = expanded_ids.shape
    layouts = [_row_layout(g, p, lengths, row_width) for g, p in zip(groups, prefixes, strict=True)]
    width = max(len(source) for source, _, _ in layouts)
    device = expanded_ids.device
    source = torch.zeros(len(layouts), width, dtype=torch.long)  # flat unpacked index
    segment = torch.full((len(layouts), width), PADDING, dtype=torch.long)
    positions = torch.zeros(len(layouts), width, dtype=torch.long)
    unpack_index = torch.zeros(num_rows, row_width, dtype=torch.long)
    for packed_row, (flat_source, segments, row_positions) in enumerate(layouts):
        size = len(flat_source)
        source[packed_row, :size] = torch.tensor(flat_source)
        segment[packed_row, :size] = torch.tensor(segments)
        positions[packed_row, :size] = torch.tensor(row_positions)
        for row in groups[packed_row]:
            # the row's prefix, then its own tokens, where they lie in the packed row
            own = (segment[packed_row] == row).nonzero().flatten()
            columns = torch.cat([torch.arange(prefixes[packed_row]), own])
            unpack_index[row, : len(columns)] = columns + packed_row * width
    hidden_size = inputs_embeds.shape[-1]
    flat_embeds = inputs_embeds.reshape(num_rows * row_width, hidden_size)
    packed_embeds = gather_rows(flat_embeds, source.to(device))  # (B', Lp, H)
    mask = _attention_mask(segment.to(device), attn_implementation, inputs_embeds.dtype)
    return PackedRows(
        inputs_embeds=packed_embeds,
        attention_mask=mask,
        position_ids=positions.to(device),
        unpack_index=unpack_index.to(device),
        num_tokens=sum(len(s) for s, _, _ in layouts),
    )


def _row_layout(
    group: list[int], prefix: int, lengths: list[int], row_width: int
) -> tuple[list[int], list[int], list[int]]:
    """One packed row, per token: its flat index into the unpacked [N, Lx] rows, its segment
    (PREFIX, or the row of its conversation) and its position in that row."""
    first = group[0]
    sources = [first * row_width + t for t in range(prefix)]
    segments = [PREFIX] * prefix
    positions = list(range(prefix))
    for row in group:
        own = range(prefix, lengths[row])
        sources.extend(row * row_width + t for t in own)
        segments.extend([row] * len(own))
        positions.extend(own)
    return sources, segments, positions


def _attention_mask(
    segment: torch.Tensor, attn_implementation: str, dtype: torch.dtype
) -> torch.Tensor:
    """[B', 1, Lp, Lp]: a token sees earlier (or its own) tokens of the prefix and of its own
    conversation; a padding position sees itself (so no softmax row is empty) and the prefix."""
    width = segment.shape[1]
    index = torch.arange(width, device=segment.device)
    causal = index[None, :] <= index[:, None]  # [Lp(query), Lp(key)]
    query, key = segment[:, :, None], segment[:, None, :]
    visible = (key == PREFIX) | ((key == query) & (key != PADDING))
    allowed = (causal & visible) | torch.eye(width, dtype=torch.bool, device=segment.device)
    allowed = allowed[:, None]  # [B', 1, Lp, Lp]
    if attn_implementation in BOOLEAN_MASK_ATTENTION:
        return allowed
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=segment.device)
    return blocked.masked_fill(~allowed, torch.finfo(dtype).min)


@record_function("lisa::unpack_hidden")
def unpack_hidden(hidden: torch.Tensor, packed: PackedRows) -> torch.Tensor:
    """[B', Lp, H] packed states -> [N, Lx, H] in the unpacked rows' layout (a padding position
    gets some packed state: nothing reads it)."""
    return gather_rows(hidden.reshape(-1, hidden.shape[-1]), packed.unpack_index)


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a [R, H] table and a long index of any shape: an embedding lookup,
    whose backward adds rows up directly (advanced indexing's, an accumulating index_put, takes
    several times longer on a CPU)."""
    return torch.nn.functional.embedding(index, table)
