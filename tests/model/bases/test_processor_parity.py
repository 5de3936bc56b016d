"""Our tokenisation, image inputs and batching equal the base's own processor (LlavaProcessor,
Qwen2_5_VLProcessor built from the same directory) on the same text and image, and the base's
model gives the same logits on both."""

import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    LlavaForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)

from model.bases.chat_template import read_chat_template
from utils.collate import pad
from utils.constants import DEFAULT_IMAGE_TOKEN, SEG_TOKEN

from .conftest import random_image

# Two images of other sizes and aspect ratios (Qwen: other grids), one conversation each.
IMAGES = [random_image(50, 70, seed=1), random_image(120, 90, seed=2)]
TURNS = [
    [("<image>\nWhat is the red shape?", "Sure, it is [SEG].")],
    [("<image>\nSegment the circle.", "It is [SEG]."), ("And the square?", "Sure, [SEG].")],
]


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2_5_VLProcessor without its video processor, which needs torchvision (not
    installable here); text and images go through the class's own code."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def base_processor(base_format, directory):
    """The base's own processor from its directory, [SEG] added to its tokenizer as ours."""
    if base_format.kind == "llava_hf":
        processor = AutoProcessor.from_pretrained(directory, backend="pil")
    else:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        processor = ImageOnlyQwen2_5_VLProcessor(
            image_processor=AutoImageProcessor.from_pretrained(directory, backend="pil"),
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=read_chat_template(directory, tokenizer),
        )
    processor.tokenizer.add_tokens(SEG_TOKEN)
    return processor


def base_model(base_format, directory):
    if base_format.kind == "llava_hf":
        return LlavaForConditionalGeneration.from_pretrained(directory).eval()
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(directory).eval()


def ours(base_format):
    """Conversations, ids and vision inputs through our path."""
    texts = [base_format.conversation(turns) for turns in TURNS]
    vision = [base_format.image_inputs(image) for image in IMAGES]
    ids = [
        base_format.tokenise(t, v, with_labels=False)[0] for t, v in zip(texts, vision, strict=True)
    ]
    return texts, ids, vision


def processor_text(base_format, text: str) -> str:
    """The same text with the base's unexpanded image placeholder, as the processor takes it."""
    return text.replace(DEFAULT_IMAGE_TOKEN, base_format.image_placeholder)


def test_one_image_each_equals_the_processor(base_format, base_dir):
    processor = base_processor(base_format, base_dir)
    texts, ids, vision = ours(base_format)
    for text, row, inputs, image in zip(texts, ids, vision, IMAGES, strict=True):
        theirs = processor(
            text=[processor_text(base_format, text)],
            images=[Image.fromarray(image)],
            return_tensors="pt",
        )
        assert row == theirs["input_ids"][0].tolist()
        ours_batch = base_format.collate_vision([inputs])
        if base_format.kind == "llava_hf":
            assert torch.equal(ours_batch, theirs["pixel_values"])
        else:
            assert torch.equal(ours_batch["pixel_values"], theirs["pixel_values"])
            assert torch.equal(ours_batch["image_grid_thw"], theirs["image_grid_thw"])
            mm_types = base_format.mm_token_type_ids(torch.tensor([row]))
            assert torch.equal(mm_types, theirs["mm_token_type_ids"].int())


def test_batched_vision_inputs_equal_the_processor(base_format, base_dir):
    processor = base_processor(base_format, base_dir)
    texts, _, vision = ours(base_format)
    theirs = processor(
        text=[processor_text(base_format, text) for text in texts],
        images=[Image.fromarray(image) for image in IMAGES],
        padding=True,
        return_tensors="pt",
    )
    batch = base_format.collate_vision(vision)
    if base_format.kind == "llava_hf":
        assert batch.shape == (2, 3, 32, 32)
        assert torch.equal(batch, theirs["pixel_values"])
    else:
        assert batch["image_grid_thw"].shape == (2, 3)
        assert torch.equal(batch["pixel_values"], theirs["pixel_values"])
        assert torch.equal(batch["image_grid_thw"], theirs["image_grid_thw"])


@pytest.mark.parametrize("row", [0, 1])
def test_model_logits_on_our_batch_equal_the_processors(base_format, base_dir, row):
    """Our right-padded batch of both conversations, through the base's own forward, gives each
    row the logits of the processor's output for that conversation alone."""
    processor = base_processor(base_format, base_dir)
    model = base_model(base_format, base_dir)
    texts, ids, vision = ours(base_format)
    empty = [torch.zeros(len(r), dtype=torch.long) for r in ids]
    input_ids, _, attention_mask = pad(ids, empty, base_format.tokenizer.pad_token_id)
    batch = base_format.forward_inputs(
        input_ids, attention_mask.long(), base_format.collate_vision(vision)
    )
    theirs = processor(
        text=[processor_text(base_format, texts[row])],
        images=[Image.fromarray(IMAGES[row])],
        return_tensors="pt",
    )
    with torch.no_grad():
        our_logits = model(**batch).logits[row, : len(ids[row])]
        their_logits = model(**theirs).logits[0]
    torch.testing.assert_close(our_logits, their_logits, atol=1e-5, rtol=1e-5)
    assert their_logits.std() > 0  # random weights: the logits tell inputs apart
