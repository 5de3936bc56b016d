"""LISAForCausalLM on a tiny random checkpoint: saving, loading, batching and mode invariance."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from model.LISA import LISAForCausalLM
from utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

from .tiny import SEG_ID

IM_START, IM_END = 101, 102


def make_batch(num_conversations_per_image=(2, 1), image_size=128, clip_size=32, seed=0):
    """Random ids with one image sentinel each and [SEG]s in the answers; right-padded."""
    generator = torch.Generator().manual_seed(seed)
    rows, masks = [], []
    sizes = [(50, 70), (64, 40), (33, 33)]
    for image, count in enumerate(num_conversations_per_image):
        image_masks = []
        for c in range(count):
            prefix = torch.randint(3, 100, (5 + c,), generator=generator).tolist()
            answer = torch.randint(3, 100, (4,), generator=generator).tolist()
            segs = 1 + (c + image) % 2
            ids = [1, *prefix, IM_START, IMAGE_TOKEN_INDEX, IM_END, *answer]
            for _ in range(segs):
                ids += [SEG_ID, 5]
                image_masks.append(torch.rand(sizes[image], generator=generator) > 0.5)
            rows.append(ids + [2])
        masks.append(torch.stack(image_masks).float())
    length = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = True
    labels = input_ids.masked_fill(~attention, IGNORE_INDEX)
    labels[:, :10] = IGNORE_INDEX
    labels[labels == IMAGE_TOKEN_INDEX] = IGNORE_INDEX
    num_images = len(num_conversations_per_image)
    offset = torch.tensor([0, *torch.tensor(num_conversations_per_image).cumsum(0).tolist()])
    return {
        "images": torch.randn(num_images, 3, image_size, image_size, generator=generator),
        "images_clip": torch.randn(num_images, 3, clip_size, clip_size, generator=generator),
        "input_ids": input_ids,
        "labels": labels,
        "attention_masks": attention,
        "offset": offset,
        "masks_list": masks,
        "label_list": [torch.zeros(sizes[i]) for i in range(num_images)],
        "resize_list": [(128, 100), (100, 128), (128, 128)][:num_images],
        "inference": False,
    }


@pytest.fixture(scope="module")
def model(tiny_random_lisa_dir):
    return LISAForCausalLM.from_pretrained(tiny_random_lisa_dir)


def test_saved_as_safetensors_in_released_layout(tiny_random_lisa_dir, model):
    files = sorted(p.name for p in tiny_random_lisa_dir.iterdir())
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    saved = load_file(tiny_random_lisa_dir / "model.safetensors")
    assert set(saved) == set(model.state_dict())
    prefixes = {name.split(".")[1] for name in saved if name.startswith("model.")}
    assert {"vision_tower", "mm_projector", "visual_model", "text_hidden_fcs", "layers"} <= prefixes
    assert "lm_head.weight" in saved
    config = json.loads((tiny_random_lisa_dir / "config.json").read_text())
    assert config["model_type"] == "llava" and config["sam_config"]["image_size"] == 128


def test_reload_gives_identical_outputs(tiny_random_lisa_dir, model, tmp_path):
    model.save_pretrained(tmp_path)
    again, info = LISAForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for (name, a), (_, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    batch = make_batch()
    with torch.no_grad():
        first, second = model(**batch), again(**batch)
    assert torch.equal(first.loss, second.loss)


def test_clip_runs_once_per_image(model):
    batch = make_batch((3, 1))
    seen = []
    handle = model.model.vision_tower.register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[0])
    )
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        handle.remove()
    assert seen == [2]


def test_masks_follow_seg_tokens_per_image(model):
    batch = make_batch((2, 1, 2))
    with torch.no_grad():
        output = model(**{**batch, "inference": True})
    assert [m.shape for m in output.pred_masks] == [m.shape for m in batch["masks_list"]]
    # each image's masks come from its own conversations: decoding image 1 alone agrees
    single = {key: value for key, value in make_batch((2, 1, 2)).items()}
    rows = slice(2, 3)
    single.update(
        images=batch["images"][1:2],
        images_clip=batch["images_clip"][1:2],
        input_ids=batch["input_ids"][rows],
        labels=batch["labels"][rows],
        attention_masks=batch["attention_masks"][rows],
        offset=torch.tensor([0, 1]),
        masks_list=batch["masks_list"][1:2],
        label_list=batch["label_list"][1:2],
        resize_list=batch["resize_list"][1:2],
        inference=True,
    )
    with torch.no_grad():
        alone = model(**single)
    torch.testing.assert_close(alone.pred_masks[0], output.pred_masks[1], atol=1e-4, rtol=1e-4)


def test_train_and_eval_mode_agree(model):
    batch = make_batch()
    model.train()
    try:
        with torch.no_grad():
            trained = model(**batch)
    finally:
        model.eval()
    with torch.no_grad():
        evaluated = model(**batch)
    torch.testing.assert_close(trained.loss, evaluated.loss)


@pytest.mark.parametrize("frozen_towers", [True, False])
def test_loss_backpropagates_to_trainable_parts(tiny_random_lisa_dir, frozen_towers):
    model = LISAForCausalLM.from_pretrained(tiny_random_lisa_dir)
    towers = [model.model.vision_tower, model.model.visual_model.image_encoder]
    for tower in towers:
        tower.requires_grad_(not frozen_towers)
    model(**make_batch()).loss.backward()
    decoder_grad = model.model.visual_model.mask_decoder.output_upscaling[0].weight.grad
    assert decoder_grad is not None and decoder_grad.abs().sum() > 0
    assert model.model.text_hidden_fcs[0][0].weight.grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() > 0
    assert model.model.mm_projector.weight.grad.abs().sum() > 0
    for tower in towers:
        assert all(p.grad is None for p in tower.parameters()) == frozen_towers
    first_layers = [
        model.model.vision_tower.clip.embeddings.patch_embedding.weight,
        model.model.visual_model.image_encoder.patch_embed.proj.weight,
    ]
    for weight in first_layers:
        assert (weight.grad is None) if frozen_towers else (weight.grad.abs().sum() > 0)


def test_seg_count_mismatch_is_reported(model):
    batch = make_batch()
    batch["masks_list"] = [batch["masks_list"][0][:1], batch["masks_list"][1]]
    with pytest.raises(ValueError, match="image 0: 3 \\[SEG\\] tokens .* but 1 ground-truth"):
        model(**batch)


def test_batched_generation_equals_one_by_one(model):
    batch = make_batch((1, 1, 1))
    prompts = [row[: row.tolist().index(IM_END) + 3] for row in batch["input_ids"]]
    prompts[1] = prompts[1][:-1]  # different lengths
    length = max(len(p) for p in prompts)
    input_ids = torch.zeros(3, length, dtype=torch.long)
    attention = torch.zeros(3, length, dtype=torch.bool)
    for i, p in enumerate(prompts):
        input_ids[i, : len(p)] = p
        attention[i, : len(p)] = True
    # make [SEG] likely so that masks get decoded (a copy: the module-scoped model stays intact)
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight[SEG_ID] += 0.3
    sizes = [m.shape[-2:] for m in batch["masks_list"]]
    together_ids, together_masks = model.evaluate(
        batch["images_clip"],
        batch["images"],
        input_ids,
        batch["resize_list"],
        sizes,
        max_new_tokens=8,
        attention_mask=attention,
    )
    for i, p in enumerate(prompts):
        ids, masks = model.evaluate(
            batch["images_clip"][i : i + 1],
            batch["images"][i : i + 1],
            p.unsqueeze(0),
            batch["resize_list"][i : i + 1],
            sizes[i : i + 1],
            max_new_tokens=8,
        )
        row = together_ids[i][: ids.shape[1]]
        assert row.tolist() == ids[0].tolist()
        assert masks[0].shape == together_masks[i].shape
        torch.testing.assert_close(masks[0], together_masks[i], atol=1e-4, rtol=1e-4)
    assert sum(m.shape[0] for m in together_masks) >= 2, "too few [SEG] generated to test decoding"
