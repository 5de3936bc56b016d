"""One colour per [SEG]: the masks on the image and the marks in the answer text."""

import re

import numpy as np
import pytest

from utils.answer_display import (
    SEG_COLORS,
    answer_html,
    hex_color,
    mask_label,
    overlay_masks,
    seg_color,
    split_answer,
)
from utils.visualization import overlay_mask


def test_each_mask_is_blended_in_its_own_colour_and_later_masks_lie_on_top():
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    first = np.zeros((4, 6), dtype=bool)
    first[:, :3] = True
    second = np.zeros((4, 6), dtype=bool)
    second[:, 2:5] = True
    result = overlay_masks(image, [first, second], alpha=0.5)
    assert result[0, 0].tolist() == overlay_mask(image, first, SEG_COLORS[0])[0, 0].tolist()
    assert result[0, 3].tolist() == overlay_mask(image, second, SEG_COLORS[1])[0, 3].tolist()
    assert result[0, 5].tolist() == [100, 100, 100]  # in no mask
    both = overlay_mask(overlay_mask(image, first, SEG_COLORS[0]), second, SEG_COLORS[1])
    assert result[0, 2].tolist() == both[0, 2].tolist()
    assert image[0, 0].tolist() == [100, 100, 100]  # the input is left alone


def test_opacity_zero_shows_the_image_and_one_the_colour():
    image = np.full((2, 2, 3), 50, dtype=np.uint8)
    mask = np.ones((2, 2), dtype=bool)
    assert (overlay_masks(image, [mask], alpha=0.0) == image).all()
    assert overlay_masks(image, [mask], alpha=1.0)[0, 0].tolist() == list(SEG_COLORS[0])
    untouched = overlay_masks(image, [], alpha=0.5)
    assert (untouched == image).all() and untouched is not image
    with pytest.raises(ValueError, match="between 0 and 1"):
        overlay_masks(image, [mask], alpha=1.5)


def test_colours_are_distinct_and_cycle():
    assert len(set(SEG_COLORS)) == len(SEG_COLORS)
    assert seg_color(len(SEG_COLORS)) == seg_color(0)
    assert re.fullmatch(r"#[0-9a-f]{6}", hex_color(3))
    assert tuple(int(hex_color(3)[i : i + 2], 16) for i in (1, 3, 5)) == seg_color(3)
    assert mask_label(0) == "mask 1"


def test_the_answer_is_cut_at_its_seg_marks_in_order():
    pieces = split_answer("The dog [SEG] and its ball [SEG].", 2)
    assert pieces == [
        ("The dog ", None),
        ("[SEG]", 0),
        (" and its ball ", None),
        ("[SEG]", 1),
        (".", None),
    ]
    assert split_answer("[SEG][SEG]", 2) == [("[SEG]", 0), ("[SEG]", 1)]
    assert split_answer("No mask here.", 0) == [("No mask here.", None)]
    # a mark without a mask (answer cut short) stays plain text
    assert split_answer("a [SEG] b [SEG]", 1) == [("a ", None), ("[SEG]", 0), (" b [SEG]", None)]
    assert split_answer("", 0) == []


def test_html_escapes_the_text_and_colours_each_mark_like_its_mask():
    text = 'Sure, <b>"it"</b> is [SEG] & [SEG].'
    markup = answer_html(text, 2)
    assert "<b>" not in markup and "&lt;b&gt;" in markup and "&amp;" in markup
    chips = re.findall(
        r'<span class="seg-mark" data-mask="(\d)"[^>]*background-color: (#\w+)', markup
    )
    assert chips == [("1", hex_color(0)), ("2", hex_color(1))]
    plain = re.sub(r"<[^>]+>", "", markup)
    assert plain == "Sure, &lt;b&gt;&quot;it&quot;&lt;/b&gt; is [SEG] &amp; [SEG]."
    assert "seg-mark" not in answer_html("你好 🙂 42", 0)
