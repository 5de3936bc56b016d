"""Packed conversations (one LLM row per image) give what the unpacked rows give, in fp32 on CPU:
losses, supervised logits, [SEG] states and masks within 1e-5 relative, and the gradients of
every trainable parameter after one backward pass."""

import copy

import numpy as np
import pytest
import torch

from model.builder import LoraSettings, apply_lora, set_trainable
from model.LISA import LISAForCausalLM
from model.packing import pack_conversations, unpack_hidden
from utils.batch import LisaBatch
from utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

from .tiny import SEG_ID, tiny_config

IM_START, IM_END = 101, 102
MASK_SIZE = (20, 24)
REL = 1e-5
GRADIENT_REL = 1e-4


def random_batch(
    seed: int, counts=(3, 1, 2), truncate_to: int | None = None, clip_size: int = 32
) -> LisaBatch:
    """Images with 1-3 conversations each: a shared system prompt and image, then questions and
    answers of different lengths with 0-3 [SEG]s; rows cut at ``truncate_to`` ids (their cut
    [SEG]s lose their masks, as collate_fn does). CLIP inputs are ``clip_size`` pixels wide."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(n: int) -> list[int]:
        return torch.randint(3, 100, (n,), generator=generator).tolist()

    rows, labels, masks = [], [], []
    system = tokens(6)
    for image, count in enumerate(counts):
        shared_question = tokens(2)  # conversations may share tokens past the image
        image_masks = []
        for c in range(count):
            prefix = [1, *system, IM_START, IMAGE_TOKEN_INDEX, IM_END, *shared_question]
            question = tokens(1 + 3 * c)
            answer = tokens(2)
            # image 1's first conversation has no [SEG] (so image 1 of (3, 1, 2) has none)
            for _ in range(0 if (image, c) == (1, 0) else 1 + (seed + image + c) % 3):
                answer += [SEG_ID, *tokens(c + 1)]
            ids = prefix + question + answer + [2]
            label = [IGNORE_INDEX] * (len(prefix) + len(question)) + answer + [2]
            if truncate_to is not None:
                ids, label = ids[:truncate_to], label[:truncate_to]
            rows.append(ids)
            labels.append(label)
            for _ in range(ids.count(SEG_ID)):
                image_masks.append((torch.rand(MASK_SIZE, generator=generator) > 0.5).float())
        masks.append(torch.stack(image_masks) if image_masks else torch.zeros(0, *MASK_SIZE))
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (ids, label) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        targets[i, : len(ids)] = torch.tensor(label)
        attention[i, : len(ids)] = True
    num_images = len(counts)
    return LisaBatch(
        images=torch.randn(num_images, 3, 128, 128, generator=generator),
        images_clip=torch.randn(num_images, 3, clip_size, clip_size, generator=generator),
        input_ids=input_ids,
        attention_mask=attention,
        offset=torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()]),
        resize_sizes=[(128, 100), (100, 128), (128, 128)][:num_images],
        original_sizes=[MASK_SIZE] * num_images,
        labels=targets,
        gt_masks=masks,
    )


def tiny_model(attn_implementation: str = "sdpa", **overrides) -> LISAForCausalLM:
    """The tiny LISA with random weights (``overrides``: fields of its config)."""
    torch.manual_seed(0)
    model = LISAForCausalLM(tiny_config(attn_implementation=attn_implementation, **overrides))
    with torch.no_grad():  # non-trivial norms and biases too
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.train()


def run(model: torch.nn.Module, batch: LisaBatch, packed: bool):
    """Losses, outputs and gradients of one forward and backward pass."""
    lisa = model.get_base_model() if hasattr(model, "get_base_model") else model
    lisa.pack_conversations = packed
    model.zero_grad(set_to_none=True)
    output = model(batch, output_logits=True)
    output.loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output, gradients


def assert_close(actual, expected, rel=REL, what=""):
    assert actual.shape == expected.shape, what
    if expected.numel() == 0:
        return
    scale = expected.abs().max().clamp(min=1e-12)
    difference = (actual - expected).abs().max()
    assert difference <= rel * scale, f"{what}: max difference {difference} for scale {scale}"


def assert_same_results(unpacked, packed):
    (out_u, grads_u), (out_p, grads_p) = unpacked, packed
    for name in ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss"):
        assert out_p[name].item() == pytest.approx(out_u[name].item(), rel=REL, abs=1e-7), name
    assert torch.equal(out_p.seg_token_mask, out_u.seg_token_mask)
    assert_close(out_p.pred_embeddings, out_u.pred_embeddings, what="[SEG] projections")
    seg = out_u.seg_token_mask
    assert_close(out_p.last_hidden_state[seg], out_u.last_hidden_state[seg], what="[SEG] states")
    assert_gradients_close(grads_u, grads_p)


def assert_gradients_close(unpacked: dict, packed: dict):
    """Every trainable parameter's gradient within 1e-4 of the unpacked one's, relative to the
    largest gradient entry of the model (a gradient that is zero in exact arithmetic, such as a
    key bias's under softmax, is float noise in both runs and has no scale of its own)."""
    assert packed.keys() == unpacked.keys()
    scale = max(g.abs().max() for g in unpacked.values())
    for name, gradient in unpacked.items():
        difference = (packed[name] - gradient).abs().max()
        assert difference <= GRADIENT_REL * scale, f"gradient of {name}: {difference} ({scale})"


def supervised_positions(model: LISAForCausalLM, batch: LisaBatch) -> torch.Tensor:
    """[N, Lx] bool: the expanded positions whose logits predict a supervised label."""
    features = model.model.get_image_features(batch.images_clip)
    image_index = torch.repeat_interleave(
        torch.arange(batch.num_images), batch.offset[1:] - batch.offset[:-1]
    )
    inputs = model.prepare_multimodal_inputs(
        batch.input_ids, features, image_index, batch.attention_mask, batch.labels
    )
    positions = torch.zeros_like(inputs.attention_mask)
    positions[:, :-1] = inputs.labels[:, 1:] != IGNORE_INDEX
    return positions


def compare(model, batch):
    unpacked = run(model, batch, packed=False)
    packed = run(model, batch, packed=True)
    assert_same_results(unpacked, packed)
    lisa = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        where = supervised_positions(lisa, batch)
    assert where.any()
    assert_close(packed[0].logits[where], unpacked[0].logits[where], what="supervised logits")
    return unpacked, packed


@pytest.mark.parametrize(
    ("seed", "counts", "truncate_to", "attention"),
    [
        (0, (3, 1, 2), None, "sdpa"),
        (1, (2, 3), None, "eager"),
        (2, (1, 3, 2), 22, "sdpa"),  # truncated: some answers and [SEG]s cut
        (3, (3, 2), 14, "sdpa"),  # every [SEG] cut: no mask at all
    ],
)
def test_packed_rows_give_the_unpacked_results(seed, counts, truncate_to, attention):
    model = tiny_model(attention)
    batch = random_batch(seed, counts, truncate_to)
    compare(model, batch)


def test_packed_with_lora_and_gradient_checkpointing():
    model = tiny_model()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    trained = set_trainable(model, "lisa")
    assert any("lora_" in name for name in trained)
    _, (_, gradients) = compare(model, random_batch(4, (2, 3)))
    assert any("lora_" in name for name in gradients)


def test_packed_mask_prediction_equals_unpacked():
    model = tiny_model().eval()
    batch = random_batch(5, (3, 2))
    predictions = {}
    for packed in (False, True):
        model.pack_conversations = packed
        with torch.no_grad():
            predictions[packed] = model.predict_masks(batch)
    for got, expected in zip(
        predictions[True].pred_masks, predictions[False].pred_masks, strict=True
    ):
        assert got.shape == expected.shape
        assert_close(got, expected, what="mask logits")


def test_each_image_prefix_goes_through_the_llm_once():
    model = tiny_model()
    batch = random_batch(6, (3, 1, 2))
    image_index = torch.tensor([0, 0, 0, 1, 2, 2])
    features = model.model.get_image_features(batch.images_clip)
    inputs = model.prepare_multimodal_inputs(
        batch.input_ids, features, image_index, batch.attention_mask
    )
    packed = pack_conversations(
        inputs.expanded_ids, inputs.inputs_embeds, inputs.attention_mask, image_index, "sdpa"
    )
    lengths = inputs.attention_mask.sum(1).tolist()
    # the rows of one image share BOS, system prompt, image and the shared question tokens
    shared = 1 + 6 + 2 + model.model.num_image_tokens + 2
    expected = sum(
        shared + sum(lengths[r] - shared for r in rows) for rows in ([0, 1, 2], [3], [4, 5])
    )
    assert packed.inputs_embeds.shape[0] == 3  # one row per image
    assert packed.num_tokens == expected < sum(lengths)
    # every real token of every row finds its own embedding (and position) in the packed rows
    valid = inputs.attention_mask
    assert torch.equal(
        unpack_hidden(packed.inputs_embeds, packed)[valid], inputs.inputs_embeds[valid]
    )
    positions = unpack_hidden(packed.position_ids[..., None], packed)[..., 0]
    expected_positions = torch.arange(valid.shape[1]).expand_as(valid)
    assert torch.equal(positions[valid], expected_positions[valid])


def test_conversations_do_not_see_each_other():
    """Changing one conversation's own tokens leaves the other conversations' states unchanged."""
    model = tiny_model().eval()
    model.pack_conversations = True
    batch = random_batch(7, (2,))
    changed = copy.deepcopy(batch)
    last = int(changed.attention_mask[1].sum()) - 1
    changed.input_ids[1, last - 3 : last] = 7
    with torch.no_grad():
        before = model.predict_masks(batch).last_hidden_state
        after = model.predict_masks(changed).last_hidden_state
    real = batch.attention_mask[0].sum() + features_added(model)
    assert torch.equal(before[0, :real], after[0, :real])
    assert not torch.equal(before[1], after[1])


def features_added(model: LISAForCausalLM) -> int:
    return model.model.num_image_tokens - 1


def test_nothing_shared_leaves_the_rows_unpacked():
    model = tiny_model()
    batch = random_batch(8, (1, 1))
    features = model.model.get_image_features(batch.images_clip)
    image_index = torch.arange(2)
    inputs = model.prepare_multimodal_inputs(
        batch.input_ids, features, image_index, batch.attention_mask
    )
    args = (inputs.expanded_ids, inputs.inputs_embeds, inputs.attention_mask, image_index)
    assert pack_conversations(*args, "sdpa") is None
    assert (
        pack_conversations(*args[:3], torch.zeros(2, dtype=torch.long), "flash_attention_2") is None
    )


@pytest.mark.reference
def test_packed_reference_batch_gives_the_unpacked_results(tiny_lisa_dir, tiny_cases_dir):
    """The original's training batch of the reference fixtures (two conversations about its
    first image), on the reference checkpoint, every parameter trainable."""
    from .test_lisa_reference import load_case, sam_input

    model = LISAForCausalLM.from_pretrained(
        tiny_lisa_dir,
        vision_tower=str(tiny_lisa_dir / "clip"),
        seg_token_idx=512,
        torch_dtype=torch.float32,
    ).train()
    meta, arrays = load_case(tiny_cases_dir, "train_forward")
    gt = np.load(tiny_cases_dir / "gt_masks.npz")
    masks = [
        torch.from_numpy(np.stack([gt[f"{image}__{shape}"] for shape in shapes])).float()
        for image, shapes in meta["gt_masks_per_image"].items()
    ]
    batch = LisaBatch(
        images=torch.cat([sam_input(tiny_cases_dir, image) for image in meta["images"]]),
        images_clip=torch.from_numpy(arrays["images_clip"]),
        input_ids=torch.from_numpy(arrays["input_ids"]),
        attention_mask=torch.from_numpy(arrays["attention_masks"]),
        offset=torch.from_numpy(arrays["offset"]),
        resize_sizes=meta["resize_list"],
        original_sizes=[tuple(s) for s in meta["label_list_shapes"]],
        labels=torch.from_numpy(arrays["labels"]),
        gt_masks=masks,
    )
    assert (batch.offset[1:] - batch.offset[:-1]).max() > 1
    compare(model, batch)
