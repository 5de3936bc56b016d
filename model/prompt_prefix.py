"""Prompt prefixes through the LLM once: the tokens several prompts about one image begin with.

Two kinds of reuse in generation, both exact (the same keys and values, the same positions):

- Prompts of one batch about the same image share their beginning (the system prompt, ``USER:``,
  the image's features and its end token, and whatever else they have in common). That prefix
  runs through the LLM once per image; each row then continues from a copy of its keys and
  values with its own tokens.
- A follow-up turn re-sends the whole conversation. The keys and values of the last
  conversation about an image (a :class:`CachedPrefix`, kept by the caller between calls) cover
  the part the new prompt begins with; only the rest is computed.

Every row keeps at least its last prompt token out of the prefix: the state of that position
gives the first new token. The rows' prefixes are handed to the decoder as one cache of
``[N, heads, P, head_dim]`` per layer, each row's prefix right-aligned in the P columns, and a
mask of the columns that hold one (:class:`PrefixRows`).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache

from model.packing import conversation_groups, shared_prefix_lengths


@dataclass
class CachedPrefix:
    """The keys and values of the beginning of one conversation about an image, kept to start
    a later prompt about the same image that begins with the same tokens."""

    ids: torch.Tensor  # [P] long: expanded ids (IMAGE_TOKEN_INDEX at the image's positions)
    cache: DynamicCache  # one row, P positions per layer

    @property
    def length(self) -> int:
        return self.ids.shape[0]

    def common_length(self, ids: torch.Tensor) -> int:
        """How many leading ids of the expanded prompt ``ids`` [L] this prefix holds."""
        size = min(self.length, ids.shape[0])
        differs = (self.ids[:size] != ids[:size].to(self.ids.device)).nonzero()
        return int(differs[0]) if len(differs) else size

    def first(self, length: int) -> DynamicCache:
        """A new one-row cache of the first ``length`` positions (this one stays as it is)."""
        return DynamicCache(
            ddp_cache_data=[
                (layer.keys[:, :, :length], layer.values[:, :, :length])
                for layer in self.cache.layers
            ]
        )


@dataclass
class PrefixPlan:
    """How the prompts of a batch split into a prefix per image and each row's own tokens."""

    groups: list[list[int]]  # rows about each image that has prompts
    images: list[int]  # the image of each group
    lengths: list[int]  # positions of each group's prefix (0: none)
    reused: list[int]  # of those, the positions taken from the image's cached prefix

    def row_prefix_lengths(self, num_rows: int) -> list[int]:
        lengths = [0] * num_rows
        for group, length in zip(self.groups, self.lengths, strict=True):
            for row in group:
                lengths[row] = length
        return lengths


@dataclass
class PrefixRows:
    """Each row's prefix for the decoder, right-aligned in ``P`` columns."""

    past: DynamicCache  # keys and values [N, heads, P, head_dim] per layer
    mask: torch.Tensor  # [N, P] bool: the columns holding a row's prefix


def plan_prefixes(
    expanded_ids: torch.Tensor,
    mask: torch.Tensor,
    conversation_to_image: torch.Tensor,
    *,
    share: bool,
    cached: Sequence[CachedPrefix | None] | None = None,
) -> PrefixPlan:
    """The prefix of each image's rows in the right-padded expanded prompts [N, Lx].

    ``cached`` (one entry per image, or None) gives keys and values of an earlier conversation
    about each image: the part every row of the image begins with is taken from it. With
    ``share``, the rows about one image may run more of their common beginning once, before
    the rows go on together (left-padded to the longest rest): as much as makes the fewest
    positions through the LLM in all.
    """
    mask = mask.bool()
    groups = conversation_groups(conversation_to_image)
    images = [int(conversation_to_image[group[0]]) for group in groups]
    row_lengths = mask.sum(1).tolist()
    shared = shared_prefix_lengths(expanded_ids, mask, groups) if share else [0] * len(groups)
    reused, longest_prefix = [], []
    for group, image, common in zip(groups, images, shared, strict=True):
        room = min(row_lengths[row] for row in group) - 1  # each row keeps its last token
        entry = cached[image] if cached is not None else None
        from_cache = 0
        if entry is not None:
            from_cache = min(
                entry.common_length(expanded_ids[row, : row_lengths[row]]) for row in group
            )
        reused.append(max(0, min(from_cache, room)))
        longest_prefix.append(max(reused[-1], min(common, room)))
    longest_rows = [max(row_lengths[row] for row in group) for group in groups]
    lengths = _fewest_positions(reused, longest_prefix, longest_rows, [len(g) for g in groups])
    return PrefixPlan(groups=groups, images=images, lengths=lengths, reused=reused)


def _fewest_positions(
    reused: list[int], longest_prefix: list[int], longest_rows: list[int], group_sizes: list[int]
) -> list[int]:
    """Each group's prefix length, between ``reused`` and ``longest_prefix``, for which the
    positions through the LLM (each prefix once past what is reused, then every row
    left-padded to the longest rest) are fewest; of equal counts, the fewest prefix passes."""
    num_rows = sum(group_sizes)
    best_cost, best = None, list(reused)
    for width in range(max(longest_rows), 0, -1):  # the rows' common width after the prefixes
        lengths = [max(r, row - width) for r, row in zip(reused, longest_rows, strict=True)]
        if any(p > most for p, most in zip(lengths, longest_prefix, strict=True)):
            break  # narrower is impossible too
        cost = sum(p - r for p, r in zip(lengths, reused, strict=True)) + num_rows * width
        if best_cost is None or cost < best_cost:
            best_cost, best = cost, lengths
    return best


def run_prefixes(
    llm: nn.Module,
    inputs_embeds: torch.Tensor,
    plan: PrefixPlan,
    cached: Sequence[CachedPrefix | None] | None = None,
) -> list[DynamicCache | None]:
    """Each group's prefix through ``llm`` once (one row; what ``cached`` holds of it is not
    recomputed). ``inputs_embeds`` [N, Lx, H] are the right-padded expanded prompts."""
    caches: list[DynamicCache | None] = []
    for group, image, length, reused in zip(
        plan.groups, plan.images, plan.lengths, plan.reused, strict=True
    ):
        if length == 0:
            caches.append(None)
            continue
        past = cached[image].first(reused) if reused else DynamicCache(config=llm.config)
        if length > reused:
            row = group[0]
            positions = torch.arange(reused, length, device=inputs_embeds.device)
            llm(
                inputs_embeds=inputs_embeds[row : row + 1, reused:length],
                position_ids=positions[None],
                past_key_values=past,
                use_cache=True,
            )
        caches.append(past)
    return caches


def prefix_rows(
    plan: PrefixPlan, caches: Sequence[DynamicCache | None], num_rows: int
) -> PrefixRows | None:
    """The groups' prefix caches copied to their rows (None when no row has a prefix)."""
    width = max(plan.lengths, default=0)
    if width == 0:
        return None
    some_cache = next(cache for cache in caches if cache is not None)
    device = some_cache.layers[0].keys.device
    mask = torch.zeros(num_rows, width, dtype=torch.bool, device=device)
    layers = []
    for layer_index, like in enumerate(some_cache.layers):
        heads = like.keys.shape[1]
        keys = like.keys.new_zeros(num_rows, heads, width, like.keys.shape[-1])
        values = like.values.new_zeros(num_rows, heads, width, like.values.shape[-1])
        for group, length, cache in zip(plan.groups, plan.lengths, caches, strict=True):
            if cache is None:
                continue
            rows = torch.tensor(group, device=device)
            keys[rows, :, width - length :] = cache.layers[layer_index].keys
            values[rows, :, width - length :] = cache.layers[layer_index].values
            mask[rows, width - length :] = True
        layers.append((keys, values))
    return PrefixRows(past=DynamicCache(ddp_cache_data=layers), mask=mask)


def prompt_suffixes(
    expanded_ids: torch.Tensor,
    inputs_embeds: torch.Tensor,
    mask: torch.Tensor,
    prefix_lengths: Sequence[int],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each right-padded row's tokens after its prefix, left-padded so that every row ends in
    the last column: ids [N, S], embeddings [N, S, H] and mask [N, S] (S: the longest rest).
    With no prefix this is the whole prompt, its padding moved to the front."""
    lengths = mask.sum(1)  # (N,)
    starts = torch.as_tensor(prefix_lengths, device=mask.device)
    width = int((lengths - starts).max())
    source = lengths[:, None] - width + torch.arange(width, device=mask.device)  # (N, S)
    own = source >= starts[:, None]
    source = source.clamp(min=0)
    ids = expanded_ids.gather(1, source).masked_fill(~own, pad_id)
    embeds = inputs_embeds.gather(1, source[..., None].expand(-1, -1, inputs_embeds.shape[-1]))
    return ids, embeds, own


ImageKey = tuple[tuple[int, ...], bytes]  # an image's shape and a digest of its pixels


def image_key(pixels: np.ndarray) -> ImageKey:
    """What identifies a picture among the ones a conversation is about: its shape and a
    digest of its pixel bytes."""
    digest = hashlib.blake2b(np.ascontiguousarray(pixels).data, digest_size=16).digest()
    return pixels.shape, digest


class PrefixCache:
    """The keys and values of the last conversation about each of the ``size`` most recently
    used images (least recently used dropped first); ``size`` 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[ImageKey, CachedPrefix] = OrderedDict()
        self._lock = threading.Lock()  # a server may answer from several threads

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: ImageKey) -> CachedPrefix | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: ImageKey, prefix: CachedPrefix | None) -> None:
        """Keep ``prefix`` for the image ``key`` (None forgets what was kept for it)."""
        with self._lock:
            self._entries.pop(key, None)
            if prefix is not None and self.size > 0:
                self._entries[key] = prefix
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
