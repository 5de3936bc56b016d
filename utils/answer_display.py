"""How an answer is shown: one colour per [SEG], the same on the image and in the text.

The i-th ``[SEG]`` of an answer produced the i-th mask; both get colour ``i`` of
:data:`SEG_COLORS` (cycling after the last one), so a reader can tell which words a mask
belongs to.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from utils.constants import SEG_TOKEN
from utils.visualization import overlay_mask

# Okabe and Ito's palette (told apart with the common colour blindnesses), then three more.
SEG_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (230, 25, 75),  # red
)


def seg_color(index: int) -> tuple[int, int, int]:
    """RGB colour of the ``index``-th [SEG] (0-based) of an answer."""
    return SEG_COLORS[index % len(SEG_COLORS)]


def hex_color(index: int) -> str:
    """``#rrggbb`` of :func:`seg_color`."""
    return "#{:02x}{:02x}{:02x}".format(*seg_color(index))


def mask_label(index: int) -> str:
    """The name a mask goes by on the page: "mask 1" for index 0."""
    return f"mask {index + 1}"


def overlay_masks(image: np.ndarray, masks: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """The image with every mask blended in its own colour (later masks on top).

    Args:
        image: [H, W, 3] RGB uint8.
        masks: [H, W] bool each, in [SEG] order.
        alpha: weight of the colour in the blend, 0 (image only) to 1 (colour only).
    Returns:
        [H, W, 3] RGB uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    result = image
    for index, mask in enumerate(masks):
        result = overlay_mask(result, np.asarray(mask, dtype=bool), seg_color(index), alpha)
    return result.copy() if result is image else result


def split_answer(text: str, num_masks: int) -> list[tuple[str, int | None]]:
    """The answer cut at its [SEG] marks: ``(piece, mask index)``, None for plain text.

    A [SEG] beyond ``num_masks`` (a mark the model wrote without a mask, e.g. an answer cut at
    ``max_new_tokens``) stays plain text.
    """
    pieces: list[tuple[str, int | None]] = []
    for index, chunk in enumerate(text.split(SEG_TOKEN)):
        if index > 0:
            mask = index - 1
            pieces.append((SEG_TOKEN, mask if mask < num_masks else None))
        if chunk:
            pieces.append((chunk, None))
    merged: list[tuple[str, int | None]] = []
    for piece, mask in pieces:  # neighbouring plain pieces read as one
        if merged and mask is None and merged[-1][1] is None:
            merged[-1] = (merged[-1][0] + piece, None)
        else:
            merged.append((piece, mask))
    return merged


def answer_html(text: str, num_masks: int) -> str:
    """The answer as HTML: text escaped, each [SEG] a chip in its mask's colour."""
    parts = []
    for piece, mask in split_answer(text, num_masks):
        if mask is None:
            parts.append(html.escape(piece))
            continue
        red, green, blue = seg_color(mask)
        ink = "#000000" if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else "#ffffff"
        parts.append(
            f'<span class="seg-mark" data-mask="{mask + 1}" title="{mask_label(mask)}" '
            f'style="background-color: {hex_color(mask)}; color: {ink}; '
            f'border-radius: 4px; padding: 0 4px;">{html.escape(piece)}</span>'
        )
    return "".join(parts)
