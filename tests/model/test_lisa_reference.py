"""LISAForCausalLM against the original implementation's outputs on the tiny reference checkpoint."""

import json

import numpy as np
import pytest
import torch

from model.LISA import LISAForCausalLM

pytestmark = pytest.mark.reference

ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny_model(tiny_lisa_dir):
    model = LISAForCausalLM.from_pretrained(
        tiny_lisa_dir,
        vision_tower=str(tiny_lisa_dir / "clip"),
        seg_token_idx=512,
        torch_dtype=torch.float32,
    )
    return model


def load_case(cases, name):
    return json.loads((cases / f"{name}.json").read_text()), dict(np.load(cases / f"{name}.npz"))


def sam_input(cases, image):
    return torch.from_numpy(np.load(cases / f"preprocess_{image}.npz")["sam_input"])


def close(actual, expected, atol=ATOL, rtol=RTOL):
    actual = actual.detach().float().numpy() if isinstance(actual, torch.Tensor) else actual
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def train_case(tiny_cases_dir):
    meta, arrays = load_case(tiny_cases_dir, "train_forward")
    gt = np.load(tiny_cases_dir / "gt_masks.npz")
    masks = [
        torch.from_numpy(np.stack([gt[f"{image}__{shape}"] for shape in shapes])).float()
        for image, shapes in meta["gt_masks_per_image"].items()
    ]
    batch = {
        "images": torch.cat([sam_input(tiny_cases_dir, image) for image in meta["images"]]),
        "images_clip": torch.from_numpy(arrays["images_clip"]),
        "input_ids": torch.from_numpy(arrays["input_ids"]),
        "labels": torch.from_numpy(arrays["labels"]),
        "attention_masks": torch.from_numpy(arrays["attention_masks"]),
        "offset": torch.from_numpy(arrays["offset"]),
        "masks_list": masks,
        "label_list": [torch.full(tuple(s), 255.0) for s in meta["label_list_shapes"]],
        "resize_list": meta["resize_list"],
        "inference": False,
    }
    return meta, arrays, batch


def test_training_forward_matches_reference(tiny_model, train_case):
    meta, arrays, batch = train_case
    tiny_model.train()
    try:
        output = tiny_model(**batch, output_logits=True)
    finally:
        tiny_model.eval()
    for name, value in meta["losses"].items():
        assert output[name].item() == pytest.approx(value, rel=1e-5), name
    valid = arrays["mm_attention_mask"]
    close(output.last_hidden_state[torch.from_numpy(valid)], arrays["last_hidden_state"][valid])
    close(output.logits[torch.from_numpy(valid)], arrays["logits"][valid])
    np.testing.assert_array_equal(output.seg_token_mask.numpy(), arrays["seg_token_mask"])
    close(output.pred_embeddings, arrays["pred_embeddings"])


def test_training_forward_masks_match_reference(tiny_model, train_case):
    _, arrays, batch = train_case
    with torch.no_grad():
        output = tiny_model(**{**batch, "inference": True})
    for i, pred in enumerate(output.pred_masks):
        close(pred, arrays[f"pred_masks_{i}"], atol=1e-3, rtol=1e-3)
        # binarised masks agree except where the reference logit is within noise of zero
        reference = arrays[f"pred_masks_{i}"]
        differ = (pred.numpy() > 0) != (reference > 0)
        assert np.all(np.abs(reference[differ]) < 1e-3)


def test_inference_forward_matches_reference(tiny_model, tiny_cases_dir):
    meta, arrays = load_case(tiny_cases_dir, "inference_forward")
    gt = torch.from_numpy(arrays["gt_masks"]).float()
    output = tiny_model(
        images=sam_input(tiny_cases_dir, "img3"),
        images_clip=torch.from_numpy(arrays["images_clip"]),
        input_ids=torch.from_numpy(arrays["input_ids"]),
        labels=torch.from_numpy(arrays["labels"]),
        attention_masks=torch.from_numpy(arrays["attention_masks"]),
        offset=torch.from_numpy(arrays["offset"]),
        masks_list=[gt],
        label_list=[torch.full(gt.shape[1:], 255.0)],
        resize_list=[np.load(tiny_cases_dir / "preprocess_img3.npz")["resize"].tolist()],
        inference=True,
        output_logits=True,
    )
    close(output.last_hidden_state[0], arrays["last_hidden_state"][0])
    close(output.logits[0], arrays["logits"][0])
    np.testing.assert_array_equal(output.seg_token_mask.numpy(), arrays["seg_token_mask"])
    close(output.pred_embeddings, arrays["pred_embeddings"])
    close(output.pred_masks[0], arrays["pred_masks"], atol=1e-3, rtol=1e-3)
    assert torch.equal(output.gt_masks[0], gt)
    positives = int((output.pred_masks[0] > 0).sum())
    assert abs(positives - meta["validate_metric_inputs"]["pred_binary_pixels"]) <= 2


def test_evaluate_matches_reference(tiny_model, tiny_cases_dir):
    meta, arrays = load_case(tiny_cases_dir, "evaluate_plain")
    pre = np.load(tiny_cases_dir / "preprocess_img1.npz")
    output_ids, pred_masks = tiny_model.evaluate(
        torch.from_numpy(pre["images_clip"]),
        torch.from_numpy(pre["sam_input"]),
        torch.from_numpy(arrays["input_ids"]),
        resize_list=[pre["resize"].tolist()],
        original_size_list=[pre["original_size"].tolist()],
        max_new_tokens=16,
    )
    assert output_ids[0].tolist() == meta["output_ids"]
    assert len(pred_masks) == 1 and pred_masks[0].shape == arrays["pred_masks"].shape
    close(pred_masks[0], arrays["pred_masks"], atol=1e-3, rtol=1e-3)
    assert abs(int((pred_masks[0] > 0).sum()) - meta["pred_mask0_positive_pixels"]) <= 2


def test_tiny_lisa_loads_every_saved_tensor(tiny_lisa_dir):
    model, info = LISAForCausalLM.from_pretrained(
        tiny_lisa_dir,
        vision_tower=str(tiny_lisa_dir / "clip"),
        seg_token_idx=512,
        output_loading_info=True,
    )
    assert info["missing_keys"] == set()
    assert info["unexpected_keys"] == set()  # the two rotary inv_freq buffers are dropped
    state = model.state_dict()
    saved = torch.load(tiny_lisa_dir / "pytorch_model.bin", weights_only=True)
    for name, tensor in saved.items():
        if not name.endswith("inv_freq"):
            assert torch.equal(state[name], tensor), name
    clip = torch.load(tiny_lisa_dir / "clip" / "pytorch_model.bin", weights_only=True)
    for name, tensor in clip.items():
        assert torch.equal(state["model.vision_tower.vision_tower." + name], tensor), name
    assert set(state) == {k for k in saved if not k.endswith("inv_freq")} | {
        "model.vision_tower.vision_tower." + k for k in clip
    }


def test_vision_tower_comes_from_the_checkpoint_when_it_has_one(tiny_lisa_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    extra = load_file(tiny_lisa_dir / "extra" / "vision_tower_full_prefix.safetensors")
    marker = "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"
    extra[marker] = extra[marker] + 1.0  # tells the checkpoint's copy from the CLIP directory's
    saved = torch.load(tiny_lisa_dir / "pytorch_model.bin", weights_only=True)
    save_file({**saved, **extra}, tmp_path / "model.safetensors")
    for name in (
        "config.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        (tmp_path / name).write_bytes((tiny_lisa_dir / name).read_bytes())
    model, info = LISAForCausalLM.from_pretrained(
        tmp_path,
        vision_tower=str(tiny_lisa_dir / "clip"),
        seg_token_idx=512,
        output_loading_info=True,
    )
    assert info["missing_keys"] == set()
    assert torch.equal(model.state_dict()[marker], extra[marker])


def test_saved_checkpoint_keeps_the_released_layout(tiny_model, tmp_path):
    from safetensors.torch import load_file

    tiny_model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert set(saved) == set(tiny_model.state_dict())
    reloaded = LISAForCausalLM.from_pretrained(
        tmp_path
    )  # no vision_tower needed: it is in the file
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llava" and config["train_mask_decoder"] is True
    assert config["seg_token_idx"] == 512 and config["vocab_size"] == 515


def test_batched_evaluate_matches_single_prompts(tiny_model, tiny_cases_dir):
    """Two prompts about two images in one padded batch give what each gives alone."""
    meta, arrays = load_case(tiny_cases_dir, "evaluate_plain")
    first = torch.from_numpy(arrays["input_ids"][0])
    infer_meta, infer = load_case(tiny_cases_dir, "inference_forward")
    second = torch.from_numpy(infer["input_ids"][0])
    second = second[: int(infer["attention_masks"][0].sum())]
    second = second[: (second == 514).nonzero()[0, 0] + 10]  # a shorter prompt
    pres = [np.load(tiny_cases_dir / f"preprocess_{name}.npz") for name in ("img1", "img3")]
    images_clip = torch.cat([torch.from_numpy(p["images_clip"]) for p in pres])
    images = torch.cat([torch.from_numpy(p["sam_input"]) for p in pres])
    resize = [p["resize"].tolist() for p in pres]
    sizes = [p["original_size"].tolist() for p in pres]
    input_ids = torch.zeros(2, len(first), dtype=torch.long)
    attention = torch.zeros(2, len(first), dtype=torch.bool)
    for row, ids in enumerate((first, second)):
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = True
    batch_ids, batch_masks = tiny_model.evaluate(
        images_clip, images, input_ids, resize, sizes, max_new_tokens=16, attention_mask=attention
    )
    assert batch_ids[0].tolist() == meta["output_ids"]
    close(batch_masks[0], arrays["pred_masks"], atol=1e-3, rtol=1e-3)
    alone_ids, alone_masks = tiny_model.evaluate(
        images_clip[1:], images[1:], second.unsqueeze(0), resize[1:], sizes[1:], max_new_tokens=16
    )
    assert batch_ids[1, : alone_ids.shape[1]].tolist() == alone_ids[0].tolist()
    assert batch_masks[1].shape == alone_masks[0].shape
    if alone_masks[0].shape[0]:
        close(batch_masks[1], alone_masks[0].numpy(), atol=1e-3, rtol=1e-3)
