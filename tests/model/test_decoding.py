"""Greedy decoding over the preallocated cache (model.decoding) against transformers' own greedy
generate and a plain forward over prompt + answer, on left-padded prompts of different lengths;
and decoding after prompt prefixes (model.prompt_prefix) against decoding the whole prompts."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from model.decoding import greedy_decode, kept_prefix
from model.prompt_prefix import plan_prefixes, prefix_rows, prompt_suffixes, run_prefixes

PAD, VOCAB = 0, 97


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def llm(request):
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=PAD,
        attn_implementation=request.param,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def left_padded_prompts(llm, lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompt embeddings [N, max(lengths), H] padded on the left, and their mask."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    ids = torch.randint(3, VOCAB, (len(lengths), longest), generator=generator)
    mask = torch.arange(longest) >= longest - torch.tensor(lengths)[:, None]
    ids = ids.masked_fill(~mask, PAD)
    return llm.model.embed_tokens(ids), mask.long()


def decode(llm, embeds, mask, max_new_tokens, eos_id, interval=None):
    with torch.no_grad():
        decoded = greedy_decode(
            llm.model,
            llm.lm_head,
            embeds,
            mask,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=PAD,
            stop_check_interval=interval,
        )
    return decoded.tokens, decoded.hidden


def transformers_greedy(llm, embeds, mask, max_new_tokens, eos_id) -> torch.Tensor:
    with torch.no_grad():
        return llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_id,
            pad_token_id=PAD,
        )


def an_eos_that_ends_rows_early(llm, embeds, mask) -> tuple[int, int]:
    """A token the first row produces first at a step >= 1 (rows then end at different steps),
    and that step."""
    tokens, _ = decode(llm, embeds, mask, 8, None)
    answer = tokens[0].tolist()
    step = next(i for i in range(1, len(answer)) if answer[i] not in answer[:i])
    return answer[step], step


@pytest.mark.parametrize("lengths,seed", [([5], 1), ([7, 3, 11], 2), ([4, 9], 3)])
def test_same_tokens_and_states_as_a_plain_decode(llm, lengths, seed):
    embeds, mask = left_padded_prompts(llm, lengths, seed)
    ending_token, ending_step = an_eos_that_ends_rows_early(llm, embeds, mask)
    for eos_id in (None, ending_token):
        tokens, hidden = decode(llm, embeds, mask, 12, eos_id)
        expected = transformers_greedy(llm, embeds, mask, 12, eos_id)
        assert torch.equal(tokens, expected)
        if eos_id is not None:  # the first row ends at ending_step, then pads
            after = tokens[0, ending_step + 1 :]
            assert tokens[0, ending_step] == eos_id and (after == PAD).all()
            if len(lengths) == 1:
                assert tokens.shape[1] == ending_step + 1

        # the states of prompt and answer (all but the last token) from one plain forward
        fed = torch.cat([embeds, llm.model.embed_tokens(tokens[:, :-1])], dim=1)
        fed_mask = torch.cat([mask, torch.ones_like(tokens[:, :-1])], dim=1)
        positions = (fed_mask.cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            plain = llm.model(
                inputs_embeds=fed, attention_mask=fed_mask, position_ids=positions
            ).last_hidden_state
        assert hidden.shape == plain.shape
        real = fed_mask.bool()
        torch.testing.assert_close(hidden[real], plain[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lengths", [[6], [6, 2, 8]])
def test_looking_for_the_end_less_often_gives_the_same_answer(llm, lengths):
    embeds, mask = left_padded_prompts(llm, lengths, seed=4)
    eos_id, ending_step = an_eos_that_ends_rows_early(llm, embeds, mask)
    every_step = decode(llm, embeds, mask, 10, eos_id, interval=1)
    if len(lengths) == 1:  # the steps after the end are cut
        assert every_step[0].shape[1] == ending_step + 1 < 10
    for interval in (3, 16):
        tokens, hidden = decode(llm, embeds, mask, 10, eos_id, interval=interval)
        assert torch.equal(tokens, every_step[0])
        assert torch.equal(hidden, every_step[1])


def test_no_new_token_and_one_new_token(llm):
    embeds, mask = left_padded_prompts(llm, [3, 5], seed=5)
    tokens, hidden = decode(llm, embeds, mask, 0, None)
    assert tokens.shape == (2, 0) and hidden.shape == (2, 0, 64)
    tokens, hidden = decode(llm, embeds, mask, 1, None)
    assert torch.equal(tokens, transformers_greedy(llm, embeds, mask, 1, None))
    assert hidden.shape == (2, 5, 64)


def right_padded_prompts(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), PAD)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return ids, mask


def decode_after_prefixes(llm, ids, mask, conversation_to_image, share, cached=None):
    """Plan, prefixes and greedy decoding as LISA's generate runs them, on plain token rows."""
    embeds = llm.model.embed_tokens(ids)
    plan = plan_prefixes(ids, mask, conversation_to_image, share=share, cached=cached)
    with torch.no_grad():
        prefix = prefix_rows(plan, run_prefixes(llm.model, embeds, plan, cached), len(ids))
        own_ids, own_embeds, own = prompt_suffixes(
            ids, embeds, mask, plan.row_prefix_lengths(len(ids)), PAD
        )
        decoded = greedy_decode(
            llm.model,
            llm.lm_head,
            own_embeds,
            own,
            max_new_tokens=7,
            eos_id=None,
            pad_id=PAD,
            prefix=prefix,
        )
    return plan, decoded, own


def test_prefixes_give_the_tokens_and_states_of_whole_prompts(llm):
    shared = [5, 6, 7, 8, 9, 10, 11]
    rows = [[*shared, 20, 21], [*shared, 22, 23, 24, 25], [*shared[:3], 30], [40, 41, 42, 43]]
    ids, mask = right_padded_prompts(rows)
    images = torch.tensor([0, 0, 0, 1])
    plan, reused, own = decode_after_prefixes(llm, ids, mask, images, share=True)
    assert plan.lengths[0] == 3  # what the three rows of image 0 begin with
    _, whole, _ = decode_after_prefixes(llm, ids, mask, images, share=False)
    assert torch.equal(reused.tokens, whole.tokens)
    # the rows' own tokens and the new ones: the last columns of the whole rows' states
    width = reused.hidden.shape[1]
    real = torch.cat([own, torch.ones(len(rows), 6, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(
        reused.hidden[real], whole.hidden[:, -width:][real], rtol=1e-5, atol=1e-5
    )


def test_a_kept_conversation_holds_the_keys_of_its_tokens(llm):
    ids, mask = right_padded_prompts([[5, 6, 7, 8, 9], [5, 6, 7, 3]])
    _, decoded, _ = decode_after_prefixes(llm, ids, mask, torch.tensor([0, 0]), share=True)
    conversation = torch.cat([ids[1, :4], decoded.tokens[1, :6]])  # prompt, fed answer
    kept = kept_prefix(decoded, 1, conversation)
    plain = DynamicCache(config=llm.config)
    with torch.no_grad():
        llm.model(input_ids=conversation[None], past_key_values=plain, use_cache=True)
    for kept_layer, plain_layer in zip(kept.cache.layers, plain.layers, strict=True):
        torch.testing.assert_close(kept_layer.keys, plain_layer.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kept_layer.values, plain_layer.values, rtol=1e-5, atol=1e-5)
    # a follow-up that begins with the kept conversation continues it
    follow_up = [*conversation.tolist(), 50, 51]
    ids, mask = right_padded_prompts([follow_up])
    plan, continued, _ = decode_after_prefixes(
        llm, ids, mask, torch.tensor([0]), share=True, cached=[kept]
    )
    assert plan.lengths == plan.reused == [len(conversation)]
    _, whole, _ = decode_after_prefixes(llm, ids, mask, torch.tensor([0]), share=False)
    assert torch.equal(continued.tokens, whole.tokens)


@pytest.mark.slow
def test_compiled_steps_give_the_same_answer(llm):
    """torch.compile of the step (needs a C++ compiler on the CPU): the same tokens, the same
    states within float rounding, and one compilation for prompts of other lengths."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for lengths, seed in (([7, 3, 11], 2), ([5, 9, 4], 6)):
        embeds, mask = left_padded_prompts(llm, lengths, seed)
        eager_tokens, eager_hidden = decode(llm, embeds, mask, 12, None)
        with torch.no_grad():
            compiled = greedy_decode(
                llm.model,
                llm.lm_head,
                embeds,
                mask,
                max_new_tokens=12,
                eos_id=None,
                pad_id=PAD,
                compile_step=True,
            )
        assert torch.equal(compiled.tokens, eager_tokens)
        torch.testing.assert_close(compiled.hidden, eager_hidden, rtol=1e-5, atol=1e-5)
    counters = torch._dynamo.utils.counters["stats"]
    assert counters["unique_graphs"] == 1  # the second prompts' lengths reused the first's
