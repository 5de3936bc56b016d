"""Greedy decoding over the preallocated cache (model.decoding) against transformers' own greedy
generate and a plain forward over prompt + answer, on left-padded prompts of different lengths."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from model.decoding import greedy_decode

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
        return greedy_decode(
            llm.model,
            llm.lm_head,
            embeds,
            mask,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=PAD,
            stop_check_interval=interval,
        )


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
