"""The typed surface of LISAForCausalLM: forward(batch) -> losses, predict_masks(batch) -> masks,
generate(batch) -> answers and their masks; and the original's dict surface as adapters onto it."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from model.LISA import LISAForCausalLM, LisaGeneration, MaskPrediction
from utils.batch import LisaBatch
from utils.constants import IMAGE_TOKEN_INDEX

from .test_lisa import IM_END, IM_START, make_batch
from .tiny import SEG_ID


def typed(batch: dict) -> LisaBatch:
    """The LisaBatch holding what the original's dict batch holds."""
    return LisaBatch(
        images=batch["images"],
        images_clip=batch["images_clip"],
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_masks"],
        offset=batch["offset"],
        resize_sizes=batch["resize_list"],
        original_sizes=[label.shape for label in batch["label_list"]],
        labels=batch["labels"],
        gt_masks=batch["masks_list"],
    )


@pytest.fixture(scope="module")
def model(tiny_random_lisa_dir):
    return LISAForCausalLM.from_pretrained(tiny_random_lisa_dir)


def test_forward_of_a_batch_equals_the_dict_adapter(model):
    batch = make_batch((2, 1))
    with torch.no_grad():
        new = model(typed(batch), output_logits=True)
        old = model(**batch, output_logits=True)
        adapter = model.model_forward(**batch)
    for name in ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss", "mask_loss", "logits"):
        assert torch.equal(new[name], old[name]), name
    assert torch.equal(new.loss, adapter.loss)
    assert new.loss > 0 and new.ce_loss > 0 and new.mask_loss > 0


def test_predict_masks_equals_the_inference_adapter(model):
    batch = make_batch((2, 1, 2))
    with torch.no_grad():
        prediction = model.predict_masks(typed(batch))
        old = model(**{**batch, "inference": True})
    assert isinstance(prediction, MaskPrediction) and prediction.logits is None
    assert [m.shape for m in prediction.pred_masks] == [m.shape for m in batch["masks_list"]]
    for new_masks, old_masks in zip(prediction.pred_masks, old.pred_masks, strict=True):
        assert torch.equal(new_masks, old_masks)
    assert old.gt_masks == batch["masks_list"] and old.loss is None


def test_predict_masks_reads_neither_labels_nor_ground_truth(model):
    batch = typed(make_batch((1, 1)))
    bare = LisaBatch(
        images=batch.images,
        images_clip=batch.images_clip,
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        offset=batch.offset,
        resize_sizes=batch.resize_sizes,
        original_sizes=batch.original_sizes,
    )
    with torch.no_grad():
        full, without = model.predict_masks(batch), model.predict_masks(bare)
    for a, b in zip(full.pred_masks, without.pred_masks, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs a batch with labels and gt_masks"):
        model(bare)


def test_forward_refuses_unknown_arguments(model):
    batch = make_batch((1, 1))
    with pytest.raises(TypeError, match="unexpected argument.*inference"):
        model(typed(batch), inference=True)
    with pytest.raises(TypeError, match="unexpected argument.*attention_mask"):
        model(typed(batch), attention_mask=batch["attention_masks"])
    with pytest.raises(TypeError, match="labels_list"):
        model(**batch, labels_list=batch["label_list"])  # a misspelt key of the dict batch
    with pytest.raises(TypeError, match="masks"):
        model.model_forward(**batch, masks=batch["masks_list"])
    with pytest.raises(TypeError, match="without images .*offset"):
        model(input_ids=batch["input_ids"].clamp(min=0), offset=batch["offset"])
    # the original collate_fn's bookkeeping keys are accepted (and not read)
    with torch.no_grad():
        output = model(**batch, image_paths=["a.jpg", "b.jpg"], conversation_list=["..."] * 2)
    assert output.loss is not None


def test_the_plain_language_model_path_stays(model):
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        positional = model(ids).logits
        with_none = model(input_ids=ids, images=None, offset=None).logits
    assert logits.shape == (1, 4, model.config.vocab_size)
    assert torch.equal(logits, positional) and torch.equal(logits, with_none)
    text = model.generate(ids, max_new_tokens=3, do_sample=False)  # transformers' generate
    assert text.shape == (1, 7) and torch.equal(text[:, :4], ids)


def test_a_peft_causal_lm_wrapper_passes_the_batch_through(model):
    wrapped = get_peft_model(
        copy.deepcopy(model),
        LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM", init_lora_weights=True),
    )
    batch = make_batch((2, 1))
    with torch.no_grad():
        through_peft = wrapped(typed(batch))
        dict_through_peft = wrapped(**batch)
        direct = model(typed(batch))
    # fresh LoRA adapters start at zero: the wrapped model computes what the model computes
    torch.testing.assert_close(through_peft.loss, direct.loss)
    torch.testing.assert_close(dict_through_peft.loss, direct.loss)


def _prompt_with_history(segs_in_history: int) -> torch.Tensor:
    """A prompt whose earlier turn already said [SEG] (as a multi-turn chat's prompt does)."""
    turn = [1, 7, IM_START, IMAGE_TOKEN_INDEX, IM_END, 9, 11]
    answered = [13] + [SEG_ID, 15] * segs_in_history + [2]
    return torch.tensor([turn + answered + [17, 19, 21]])


def test_generate_decodes_only_the_new_answers_seg_tokens(model):
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight[SEG_ID] += 0.3  # make [SEG] likely in the answer
    model.config.eos_token_id = None  # run every step
    reference = make_batch((1,))
    prompt = _prompt_with_history(segs_in_history=2)
    size = tuple(reference["label_list"][0].shape)
    batch = LisaBatch(
        images=reference["images"],
        images_clip=reference["images_clip"],
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt, dtype=torch.bool),
        offset=torch.tensor([0, 1]),
        resize_sizes=[(128, 100)],
        original_sizes=[size],
    )
    result = model.generate(batch, max_new_tokens=6)
    assert isinstance(result, LisaGeneration)
    answer = result.output_ids[0, prompt.shape[1] :]
    new_segs = int((answer == SEG_ID).sum())
    assert new_segs >= 1, "no [SEG] generated: the test needs one"
    assert result.pred_masks[0].shape == (new_segs, *size)  # the prompt's two [SEG]s: no mask

    # the same masks as a full forward over prompt + answer, whose last masks they are
    full_ids = result.output_ids
    whole = LisaBatch(
        images=batch.images,
        images_clip=batch.images_clip,
        input_ids=full_ids,
        attention_mask=torch.ones_like(full_ids, dtype=torch.bool),
        offset=batch.offset,
        resize_sizes=batch.resize_sizes,
        original_sizes=batch.original_sizes,
    )
    with torch.no_grad():
        every = model.predict_masks(whole).pred_masks[0]
    # the last generated token's own state is never computed, so a final [SEG] has its mask
    # from the state before it, as in the full forward
    assert every.shape[0] == 2 + new_segs
    torch.testing.assert_close(result.pred_masks[0], every[2:], atol=1e-4, rtol=1e-4)

    old_ids, old_masks = model.evaluate(
        batch.images_clip, batch.images, prompt, [(128, 100)], [size], max_new_tokens=6
    )
    assert torch.equal(old_ids, result.output_ids)
    assert torch.equal(old_masks[0], result.pred_masks[0])


def test_generate_refuses_unknown_arguments(model):
    batch = typed(make_batch((1,)))
    with pytest.raises(TypeError, match="unexpected keyword argument 'temperature'"):
        model.generate(batch, temperature=0.5)
