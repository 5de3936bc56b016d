"""Prompt prefixes through the LLM once (model.prompt_prefix): generation that shares an image's
prefix among the prompts of a batch, or continues the kept conversation about the image, gives
the ids and masks of generation that computes every prompt whole."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from model.LISA import LISAForCausalLM
from model.prompt_prefix import (
    CachedPrefix,
    PrefixCache,
    image_key,
    plan_prefixes,
    prompt_suffixes,
)
from model.segmenter import LisaSegmenter
from utils.batch import LisaBatch
from utils.constants import IMAGE_TOKEN_INDEX

from .test_lisa import IM_END, IM_START
from .tiny import SEG_ID

MASK_SIZES = [(50, 70), (64, 40)]
RESIZES = [(128, 100), (100, 128)]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, tiny_random_lisa_dir):
    model = LISAForCausalLM.from_pretrained(tiny_random_lisa_dir, attn_implementation=request.param)
    with torch.no_grad():
        model.lm_head.weight[SEG_ID] += 0.3  # answers with [SEG]s, so that masks are compared
    model.config.eos_token_id = None  # every step runs
    return model.eval()


class LLMInputs:
    """Records the (rows, positions) of every LLM forward (a hook; the LLM runs as it is)."""

    def __init__(self, llm: torch.nn.Module) -> None:
        self.shapes: list[tuple[int, int]] = []
        self.handle = llm.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs) -> None:
        self.shapes.append(tuple(kwargs["inputs_embeds"].shape[:2]))

    @property
    def positions(self) -> int:
        return sum(rows * length for rows, length in self.shapes)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def prompt(question: list[int], system: tuple[int, ...] = (1, 31, 32, 33)) -> list[int]:
    return [*system, IM_START, IMAGE_TOKEN_INDEX, IM_END, *question]


def batch_of(rows: list[list[int]], prompts_per_image: list[int], seed: int = 0) -> LisaBatch:
    """Right-padded prompts about ``len(prompts_per_image)`` random images."""
    generator = torch.Generator().manual_seed(seed)
    num_images = len(prompts_per_image)
    length = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return LisaBatch(
        images=torch.randn(num_images, 3, 128, 128, generator=generator),
        images_clip=torch.randn(num_images, 3, 32, 32, generator=generator),
        input_ids=ids,
        attention_mask=mask,
        offset=torch.tensor([0, *np.cumsum(prompts_per_image).tolist()]),
        resize_sizes=RESIZES[:num_images],
        original_sizes=MASK_SIZES[:num_images],
    )


def generate(model, batch, **options):
    with LLMInputs(model.model) as inputs:
        result = model.generate(batch, max_new_tokens=6, **options)
    return result, inputs


def assert_same_generation(reused, whole) -> None:
    """The same ids; the same masks up to the last bits of a float (a different grouping of
    the same sums), so the same binary masks wherever a logit is not within that of 0."""
    assert torch.equal(reused.output_ids, whole.output_ids)
    assert [m.shape for m in reused.pred_masks] == [m.shape for m in whole.pred_masks]
    for a, b in zip(reused.pred_masks, whole.pred_masks, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=5e-6)
        clear = b.abs() > 1e-5
        assert torch.equal((a > 0)[clear], (b > 0)[clear])


def image_prefix(model) -> int:
    """Expanded positions of ``prompt([])``: system tokens, the image and its end token."""
    return len(prompt([])) - 1 + model.model.num_image_tokens


def test_prompts_about_one_image_run_its_prefix_once(model):
    questions = [[40, 41, 42], [40, 43, 44, 45, 46, 47], [48] * 9]  # three lengths
    batch = batch_of([prompt(q) for q in questions], [3])
    shared, shared_inputs = generate(model, batch, share_prefix=True)
    whole, whole_inputs = generate(model, batch, share_prefix=False)
    assert_same_generation(shared, whole)
    assert sum(m.shape[0] for m in whole.pred_masks) > 0, "no [SEG] answered: nothing compared"
    prefix = image_prefix(model)  # the rows share no question token
    assert shared_inputs.shapes[:2] == [(1, prefix), (3, 9)]
    assert whole_inputs.shapes[0] == (3, prefix + 9)
    assert shared_inputs.shapes[2:] == whole_inputs.shapes[1:] == [(3, 1)] * 5


def test_two_images_with_one_and_two_prompts(model):
    questions = [[40, 41], [50, 51, 52, 53], [50, 51, 54]]
    batch = batch_of([prompt(q) for q in questions], [1, 2])
    shared, shared_inputs = generate(model, batch, share_prefix=True)
    whole, whole_inputs = generate(model, batch, share_prefix=False)
    assert_same_generation(shared, whole)
    assert sum(m.shape[0] for m in whole.pred_masks) > 0, "no [SEG] answered: nothing compared"
    # the second image's rows share the image and "50, 51": that runs once
    assert shared_inputs.shapes.count((1, image_prefix(model) + 2)) == 1
    assert shared_inputs.positions < whole_inputs.positions


def test_a_follow_up_computes_only_its_new_tokens(model):
    first = batch_of([prompt([40, 41, 42])], [1])
    turn, _ = generate(model, first, keep_prefixes=True)
    kept = turn.prefixes[0]
    answer = turn.output_ids[0, first.input_ids.shape[1] :].tolist()
    expanded_prompt = first.input_ids.shape[1] - 1 + model.model.num_image_tokens
    assert kept.length == expanded_prompt + len(answer) - 1  # the last new token is never fed
    follow_up = batch_of([prompt([40, 41, 42, *answer, 60, 61])], [1])
    continued, continued_inputs = generate(
        model, follow_up, cached_prefixes=[kept], keep_prefixes=True
    )
    whole, whole_inputs = generate(model, follow_up, share_prefix=False)
    assert_same_generation(continued, whole)
    # the last answer token and the two new ones: the rest came from the kept conversation
    assert continued_inputs.shapes[0] == (1, 3)
    assert whole_inputs.shapes[0] == (1, kept.length + 3)
    assert continued.prefixes[0].length > kept.length  # the next turn's is longer


def test_a_kept_conversation_serves_where_a_new_prompt_begins_with_it(model):
    first = batch_of([prompt([40, 41, 42])], [1])
    kept = generate(model, first, keep_prefixes=True)[0].prefixes[0]
    other = batch_of([prompt([70, 71]), prompt([40, 41, 72, 73])], [2])
    reused, reused_inputs = generate(model, other, cached_prefixes=[kept])
    whole, whole_inputs = generate(model, other, share_prefix=False)
    assert_same_generation(reused, whole)
    # the image's prefix came from the kept conversation: no row recomputed it
    assert reused_inputs.shapes[0] == (2, 4)
    assert whole_inputs.shapes[0] == (2, image_prefix(model) + 4)


def test_no_step_keeps_nothing(model):
    batch = batch_of([prompt([40, 41])], [1])
    result = model.generate(batch, max_new_tokens=0, keep_prefixes=True)
    assert result.prefixes == [None]
    assert torch.equal(result.output_ids, batch.input_ids)


def right_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return ids, mask


def test_plan_keeps_one_token_of_every_row_out_of_the_prefix():
    ids, mask = right_padded([[1, 2, 3, 4], [1, 2, 3]])
    one_image = torch.tensor([0, 0])
    plan = plan_prefixes(ids, mask, one_image, share=True)
    assert plan.groups == [[0, 1]] and plan.lengths == [2] and plan.reused == [0]
    assert plan_prefixes(ids, mask, one_image, share=False).lengths == [0]
    kept = CachedPrefix(ids=torch.tensor([1, 2, 3, 7]), cache=DynamicCache())
    plan = plan_prefixes(ids, mask, one_image, share=False, cached=[kept])
    assert plan.lengths == plan.reused == [2]  # "1 2 3" kept, but the second row keeps its 3


def test_plan_makes_the_fewest_positions():
    # image 0: two rows sharing "1 2"; image 1: one row of 8 tokens. Its first 6 run ahead
    # (6 positions) so that the three rows go on 2 wide: 2 + 6 + 3 x 2 = 14 positions,
    # against 3 x 8 = 24 for the rows whole
    ids, mask = right_padded([[1, 2, 3, 4], [1, 2, 3], [1, 9, 9, 9, 9, 9, 9, 9]])
    plan = plan_prefixes(ids, mask, torch.tensor([0, 0, 1]), share=True)
    assert plan.lengths == [2, 6]
    assert plan.row_prefix_lengths(3) == [2, 2, 6]
    embeds = ids[..., None].float()
    own_ids, own_embeds, own = prompt_suffixes(ids, embeds, mask, [2, 2, 6], pad_id=0)
    assert own_ids.tolist() == [[3, 4], [0, 3], [9, 9]]
    assert own.tolist() == [[True, True], [False, True], [True, True]]
    assert torch.equal(own_embeds[own], own_ids[own][:, None].float())


def test_the_prefix_cache_keeps_the_most_recent_images():
    first, second = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)
    assert image_key(first) == image_key(first.copy()) != image_key(second)
    cache = PrefixCache(1)
    cache.put(image_key(first), "first")
    cache.put(image_key(second), "second")
    assert cache.get(image_key(first)) is None and cache.get(image_key(second)) == "second"
    cache.put(image_key(second), None)
    assert len(cache) == 0
    nothing = PrefixCache(0)
    nothing.put(image_key(first), "first")
    assert len(nothing) == 0


# --- through the segmenter, on the reference checkpoint --------------------------------------

RED_CIRCLE = "Can you segment the red circle in this image?"
QUESTIONS = [RED_CIRCLE, "Where is the orange circle?", "And the blue square, please?"]


@pytest.fixture(scope="module")
def segmenters(load_reference_segmenter):
    """A segmenter that reuses prefixes, and one on the same model that computes everything."""
    reusing = load_reference_segmenter(12, device="cpu")
    whole = LisaSegmenter(
        reusing.tokenizer,
        reusing.model,
        reusing.preprocessor,
        max_new_tokens=12,
        share_prefix=False,
        prefix_cache_size=0,
    )
    return reusing, whole


def ask(segmenter, *args, **kwargs):
    with LLMInputs(segmenter.model.model) as inputs:
        return segmenter(*args, **kwargs), inputs.positions


def assert_same_results(reused, whole) -> None:
    for a, b in zip(reused, whole, strict=True):
        assert (a.text, a.history, a.num_tokens) == (b.text, b.history, b.num_tokens)
        assert len(a.masks) == len(b.masks)
        for mask_a, mask_b in zip(a.masks, b.masks, strict=True):
            np.testing.assert_array_equal(mask_a, mask_b)


@pytest.mark.reference
def test_a_three_turn_chat_continues_the_kept_conversation(segmenters, tiny_cases_dir):
    reusing, whole = segmenters
    reusing.prefix_cache.clear()
    image = tiny_cases_dir / "img1.png"
    history_reused = history_whole = None
    for turn, question in enumerate(QUESTIONS):
        a, reused_positions = ask(reusing, image, question, history=history_reused)
        b, whole_positions = ask(whole, image, question, history=history_whole)
        assert_same_results([a], [b])
        if turn > 0:  # the image and the earlier turns came from the kept conversation
            assert whole_positions - reused_positions > reusing.model.model.num_image_tokens
        else:
            assert reused_positions == whole_positions
        history_reused, history_whole = a.history, b.history
    assert len(whole.prefix_cache) == 0 and len(reusing.prefix_cache) == 1


@pytest.mark.reference
def test_another_image_replaces_the_kept_conversation(segmenters, tiny_cases_dir):
    reusing, whole = segmenters
    reusing.prefix_cache.clear()
    first, second = tiny_cases_dir / "img1.png", tiny_cases_dir / "img3.png"
    earlier, _ = ask(reusing, first, RED_CIRCLE)
    ask(reusing, second, RED_CIRCLE)  # one entry: the first image's conversation is dropped
    a, reused_positions = ask(reusing, first, QUESTIONS[1], history=earlier.history)
    b, whole_positions = ask(whole, first, QUESTIONS[1], history=earlier.history)
    assert_same_results([a], [b])
    assert reused_positions == whole_positions  # nothing kept of the first image any more


@pytest.mark.reference
def test_a_new_question_about_the_same_image_reuses_its_prefix(segmenters, tiny_cases_dir):
    reusing, whole = segmenters
    reusing.prefix_cache.clear()
    image = tiny_cases_dir / "img1.png"
    ask(reusing, image, RED_CIRCLE)
    a, reused_positions = ask(reusing, image, QUESTIONS[2])
    b, whole_positions = ask(whole, image, QUESTIONS[2])
    assert_same_results([a], [b])
    assert whole_positions - reused_positions >= reusing.model.model.num_image_tokens


@pytest.mark.reference
def test_a_batch_about_one_image_sends_it_once(segmenters, tiny_cases_dir, monkeypatch):
    reusing, whole = segmenters
    reusing.prefix_cache.clear()
    path = tiny_cases_dir / "img1.png"
    requests = [(path, QUESTIONS[0]), (reusing.read_image(path), QUESTIONS[1]), (path, "Hi?")]
    batches = []
    generate_batch = reusing.model.generate
    monkeypatch.setattr(
        reusing.model, "generate", lambda b, **k: batches.append(b) or generate_batch(b, **k)
    )
    a, reused_positions = ask(reusing, requests)
    monkeypatch.undo()
    b, whole_positions = ask(whole, requests)
    assert_same_results(a, b)
    assert batches[0].num_images == 1 and batches[0].offset.tolist() == [0, 3]
    assert whole_positions - reused_positions >= 2 * reusing.model.model.num_image_tokens


def test_segmenter_refuses_a_negative_cache_size():
    with pytest.raises(ValueError, match="prefix_cache_size must be 0 or more"):
        LisaSegmenter(None, None, None, prefix_cache_size=-1)
