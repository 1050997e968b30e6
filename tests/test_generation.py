"""interp.generation: one stop rule, the same tokens as a plain greedy loop, no lasting change
to the tokenizer."""

import dataclasses

import pytest
import torch
from tiny_models import tiny_model

from interp.generation import (
    complete,
    cut_at_stop,
    encode_prompts,
    greedy_completions,
    stop_token_ids,
)
from interp.hooks import tokenizer_copy

PROMPTS = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10 w11 w12", "w13 w14"]
MAX_NEW = 10


@torch.no_grad()
def plain_greedy(loaded, prompt_ids: list[int], stops: set[int]) -> list[int]:
    """Argmax of a full forward pass at each step, one unpadded prompt, no KV cache; the stop
    token is kept and ends the row."""
    ids = list(prompt_ids)
    new: list[int] = []
    for _ in range(MAX_NEW):
        logits = loaded.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
        token = int(logits.argmax())
        ids.append(token)
        new.append(token)
        if token in stops:
            break
    return new


def with_planted_stop(loaded):
    """The same model whose tokenizer's EOS is the token the first prompt's greedy answer emits
    third: the stop rule then ends that row early and the other rows go on."""
    prompt_ids = encode_prompts(loaded.tokenizer, PROMPTS[:1])["input_ids"][0].tolist()
    free = plain_greedy(loaded, prompt_ids, stops=set())
    tokenizer = tokenizer_copy(loaded.tokenizer)
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(free[2])
    return dataclasses.replace(loaded, tokenizer=tokenizer)


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_complete_equals_a_plain_token_by_token_greedy_loop(family):
    loaded = with_planted_stop(tiny_model(family))
    tokenizer = loaded.tokenizer
    stops = set(stop_token_ids(tokenizer))
    batch = encode_prompts(tokenizer, PROMPTS)
    new_tokens = complete(loaded, **batch, max_new_tokens=MAX_NEW)
    lengths = []
    for row, prompt in enumerate(PROMPTS):
        prompt_ids = encode_prompts(tokenizer, [prompt])["input_ids"][0].tolist()
        expected = plain_greedy(loaded, prompt_ids, stops)
        got = new_tokens[row].tolist()
        assert got[: len(expected)] == expected, (prompt, got, expected)
        assert set(got[len(expected) :]) <= {tokenizer.pad_token_id}  # padded after the stop
        lengths.append(len(expected))
    assert lengths[0] == 3 < max(lengths)  # the planted stop ended row 0 alone


def test_greedy_completions_cut_at_the_stop_and_keep_prompt_order():
    loaded = with_planted_stop(tiny_model("gemma3"))
    tokenizer = loaded.tokenizer
    whole = cut_at_stop(
        tokenizer, complete(loaded, **encode_prompts(tokenizer, PROMPTS), max_new_tokens=MAX_NEW)
    )
    batched = greedy_completions(loaded, PROMPTS, MAX_NEW, batch_size=2)
    assert batched == whole
    assert whole[0].stop == tokenizer.eos_token_id and len(whole[0].ids) == 2
    assert whole[0].text(tokenizer) == tokenizer.decode(whole[0].ids)


def test_encode_prompts_pads_left_and_leaves_the_tokenizer_setting_alone():
    loaded = tiny_model("gemma3")
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"
    batch = encode_prompts(tokenizer, PROMPTS, padding_side="left")
    mask = batch["attention_mask"]
    assert bool(mask[:, -1].all()) and not bool(mask[:, 0].all())  # left padding
    greedy_completions(loaded, PROMPTS, 2)
    assert tokenizer.padding_side == "right"
