import copy

import pytest
import torch
from tiny_models import FAMILIES, tiny_model, tiny_pair

from interp.errors import InterpError
from interp.generation import complete, decode_completions
from interp.hooks import decoder_layers, residual_stream
from interp.models import ModelPair
from interp.tuco import (
    alpha_scaled,
    contribution_ratio,
    decompose,
    generate,
    last_token_index,
    output_contribution,
    roc_auc,
    score_prompts,
    tokenize_prompts,
    tuning_contribution,
)

PROMPTS = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10 w11 w12", "w13 w14 w15 w16 w17"]
TOLERANCE = 1e-4


def shared_head_pair(family: str) -> ModelPair:
    """A tiny pair whose chat model shares the base's embeddings, final norm and unembedding
    (like the project's LoRA chat-tune), with different blocks."""
    pair = tiny_pair(family)
    with torch.no_grad():
        for chat_module, base_module in (
            (pair.chat.model.get_input_embeddings(), pair.base.model.get_input_embeddings()),
            (pair.chat.model.get_decoder().norm, pair.base.model.get_decoder().norm),
            (pair.chat.model.get_output_embeddings(), pair.base.model.get_output_embeddings()),
        ):
            chat_module.load_state_dict(base_module.state_dict())
    return pair


def identical_pair(family: str = "gemma3") -> ModelPair:
    base = tiny_model(family, seed=0)
    chat = tiny_model(family, seed=0)
    chat.spec = "identical-copy"
    return ModelPair(base=base, chat=chat)


# ----------------------------------------------------------------------------- pure functions


def test_contribution_ratio_matches_hand_computation():
    base = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
    tuned = torch.tensor([[0.5, 0.5, -2.0], [0.0, 0.0, 0.0]])
    # row 0: |tuned|_1 = 3, |base|_1 = 3 -> 0.5; row 1: both vanish -> 0
    assert contribution_ratio(base, tuned).tolist() == [0.5, 0.0]


def test_output_contribution_matches_hand_computation():
    pretrained = torch.tensor([1.0, 1.0, -2.0])  # L1 = 4
    finetuned = torch.tensor([2.0, 1.0, -2.0])  # difference L1 = 1 -> 1 / (4 + 1)
    assert output_contribution(pretrained, finetuned).item() == pytest.approx(0.2)


def test_roc_auc_matches_hand_computation():
    # positives 0.9, 0.4, 0.4; negatives 0.5, 0.4: pairs won 1+1 (0.9), 0+0.5 twice (0.4 vs .5,.4)
    # -> (2 + 0.5 + 0.5) / 6 = 0.5
    assert roc_auc([0.9, 0.4, 0.4, 0.5, 0.4], [1, 1, 1, 0, 0]) == pytest.approx(0.5)
    assert roc_auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert roc_auc([0.9, 0.8, 0.1], [0, 0, 1]) == 0.0


def test_roc_auc_needs_both_classes():
    with pytest.raises(InterpError, match="both classes"):
        roc_auc([0.1, 0.2], [1, 1])


def test_last_token_index_for_left_and_right_padding():
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [1, 3]
    assert last_token_index(left).tolist() == [3, 3]


# ----------------------------------------------------------------------------- decomposition


@pytest.mark.parametrize("family", FAMILIES)
def test_components_reconstruct_finetuned_hidden_states(family):
    pair = tiny_pair(family)
    batch = tokenize_prompts(pair, PROMPTS, padding_side="right")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    parts = decompose(pair, ids, mask)
    reference = residual_stream(pair.chat.model, ids, list(range(pair.n_layers)), mask)
    real = mask.bool()
    final = parts.embeddings + parts.pretrained_sum + parts.finetuning_sum  # x_0 + sum(PTC+FTC)
    assert (final - reference[:, :, -1])[real].abs().max() <= TOLERANCE
    rows = torch.arange(len(PROMPTS))
    # layer by layer at the last prompt token: x_{l+1} = x_0 + sum_{k<=l} (PTC_k + FTC_k)
    per_layer = parts.embeddings[rows, parts.last_index].unsqueeze(1) + (
        parts.pretrained_last + parts.finetuning_last
    ).cumsum(dim=1)
    assert (per_layer - reference[rows, parts.last_index]).abs().max() <= TOLERANCE
    assert parts.finetuning_sum.abs().max() > 1e-2  # the pair differs: FTC is not trivially 0


@pytest.mark.parametrize("family", FAMILIES)
def test_alpha_one_reconstructs_finetuned_logits(family):
    pair = tiny_pair(family)
    batch = tokenize_prompts(pair, PROMPTS)
    with torch.no_grad():
        plain = pair.chat.model(**batch).logits
        with alpha_scaled(pair, 1.0):  # every block outputs x_l + PTC_l + FTC_l
            rebuilt = pair.chat.model(**batch).logits
    real = batch["attention_mask"].bool()
    assert (plain - rebuilt)[real].abs().max() <= TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_alpha_zero_equals_pretrained_forward(family):
    pair = shared_head_pair(family)
    batch = tokenize_prompts(pair, PROMPTS)
    with torch.no_grad():
        pretrained = pair.base.model(**batch).logits
        finetuned = pair.chat.model(**batch).logits
        with alpha_scaled(pair, 0.0):
            scaled = pair.chat.model(**batch).logits
    real = batch["attention_mask"].bool()
    assert (pretrained - scaled)[real].abs().max() <= TOLERANCE
    assert (pretrained - finetuned)[real].abs().max() > 1e-2


def test_alpha_scaling_is_linear_in_each_block():
    """Intermediate alpha lies between the endpoints (planted: one perturbed MLP only)."""
    pair = identical_pair("llama")
    with torch.no_grad():
        decoder_layers(pair.chat.model)[2].mlp.down_proj.weight.mul_(2.0)
    batch = tokenize_prompts(pair, PROMPTS[:1])
    with torch.no_grad():
        ends = []
        for alpha in (0.0, 0.5, 1.0):
            with alpha_scaled(pair, alpha):
                ends.append(residual_stream(pair.chat.model, batch["input_ids"], [2])[..., 0, :])
    # Only block 2 differs, and it is the last block read: x_3 is exactly affine in alpha.
    assert torch.allclose(ends[1], 0.5 * (ends[0] + ends[2]), atol=TOLERANCE)


@pytest.mark.parametrize("family", FAMILIES)
def test_tuco_lies_in_unit_interval(family):
    pair = tiny_pair(family)
    scores = tuning_contribution(
        pair, **tokenize_prompts(pair, PROMPTS), with_output_contribution=True
    )
    for values in (scores.tuco, scores.per_token, scores.cumulative, scores.output_contribution):
        assert bool(((values >= 0) & (values <= 1)).all())
    assert bool((scores.tuco > 0.01).all())
    torch.testing.assert_close(scores.cumulative[:, -1], scores.tuco, atol=1e-6, rtol=0)


def test_identical_weights_give_zero_tuco():
    pair = identical_pair()
    scores = tuning_contribution(
        pair, **tokenize_prompts(pair, PROMPTS), with_output_contribution=True
    )
    assert scores.tuco.abs().max() == 0.0
    assert scores.per_token.abs().max() == 0.0
    # x_L^PT comes from a separate base pass (HF's own positions): equal up to rounding.
    assert scores.output_contribution.abs().max() <= 1e-6


def test_cumulative_curve_is_zero_before_the_only_tuned_block():
    pair = identical_pair("qwen2")
    with torch.no_grad():
        decoder_layers(pair.chat.model)[2].mlp.up_proj.weight.add_(0.3)
    scores = tuning_contribution(pair, **tokenize_prompts(pair, PROMPTS))
    assert scores.cumulative[:, :2].abs().max() == 0.0
    assert bool((scores.cumulative[:, 2:] > 0).all())


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_batched_equals_one_by_one(family, padding_side):
    pair = tiny_pair(family)
    batch = tokenize_prompts(pair, PROMPTS, padding_side=padding_side)
    batched = tuning_contribution(pair, **batch, with_output_contribution=True)
    for row, prompt in enumerate(PROMPTS):
        single = tuning_contribution(
            pair, **tokenize_prompts(pair, [prompt]), with_output_contribution=True
        )
        torch.testing.assert_close(batched.tuco[row], single.tuco[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.cumulative[row], single.cumulative[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            batched.output_contribution[row], single.output_contribution[0], atol=1e-5, rtol=0
        )
        real = batch["attention_mask"][row].bool()
        torch.testing.assert_close(
            batched.per_token[row][real], single.per_token[0], atol=1e-5, rtol=0
        )
        assert bool((batched.per_token[row][~real] == 0).all())


def test_different_architectures_are_a_clear_error():
    with pytest.raises(InterpError, match="architecture family"):
        ModelPair(base=tiny_model("llama"), chat=tiny_model("qwen2"))


# ----------------------------------------------------------------------------- generate


@pytest.mark.parametrize("family", FAMILIES)
def test_alpha_scaled_generate_with_kv_cache_equals_without(family):
    pair = tiny_pair(family)
    batch = tokenize_prompts(pair, PROMPTS, padding_side="left")
    cached = generate(pair, **batch, alpha=0.5, max_new_tokens=10, use_cache=True)
    uncached = generate(pair, **batch, alpha=0.5, max_new_tokens=10, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("family", ["gemma3", "qwen2"])
def test_alpha_one_generate_equals_finetuned_generate(family):
    pair = tiny_pair(family)
    batch = tokenize_prompts(pair, PROMPTS, padding_side="left")
    scaled = generate(pair, **batch, alpha=1.0, max_new_tokens=10)
    copy_of_chat = copy.deepcopy(pair.chat)
    plain_pair = ModelPair(base=copy_of_chat, chat=pair.chat)  # FTC = 0: the plain chat model
    plain = generate(plain_pair, **batch, alpha=1.0, max_new_tokens=10)
    with torch.no_grad():
        reference = pair.chat.model.generate(
            **batch, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=[1, 5]
        )[:, batch["input_ids"].shape[1] :]
    assert torch.equal(scaled, reference)
    assert torch.equal(plain, reference)


def test_alpha_zero_generate_equals_pretrained_generate():
    pair = shared_head_pair("gemma3")
    batch = tokenize_prompts(pair, PROMPTS, padding_side="left")
    scaled = generate(pair, **batch, alpha=0.0, max_new_tokens=10)
    with torch.no_grad():
        reference = pair.base.model.generate(
            **batch, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=[1, 5]
        )[:, batch["input_ids"].shape[1] :]
    finetuned = generate(pair, **batch, alpha=1.0, max_new_tokens=10)
    assert torch.equal(scaled, reference)
    assert not torch.equal(finetuned, reference)


def test_sampled_generate_is_seeded_and_prompt_major():
    pair = tiny_pair("llama")
    batch = tokenize_prompts(pair, PROMPTS[:2], padding_side="left")
    first = generate(pair, **batch, max_new_tokens=6, do_sample=True, num_return_sequences=3)
    again = generate(pair, **batch, max_new_tokens=6, do_sample=True, num_return_sequences=3)
    assert first.shape[0] == 6
    assert torch.equal(first, again)


def test_generate_refuses_right_padding():
    pair = tiny_pair("llama")
    batch = tokenize_prompts(pair, PROMPTS, padding_side="right")
    with pytest.raises(InterpError, match="left-padded"):
        generate(pair, **batch, max_new_tokens=2)


def test_same_model_object_as_base_and_chat_is_a_clear_error():
    chat = tiny_model("llama")
    pair = ModelPair(base=chat, chat=chat)
    with pytest.raises(InterpError, match="same model object"):
        tuning_contribution(pair, **tokenize_prompts(pair, PROMPTS))


def test_hooks_leave_the_models_unchanged():
    pair = tiny_pair("gemma3")
    before = copy.deepcopy(pair.chat.model.state_dict())
    batch = tokenize_prompts(pair, PROMPTS)
    tuning_contribution(pair, **batch)
    with torch.no_grad():
        plain = pair.chat.model(**batch).logits
    for block in decoder_layers(pair.chat.model):
        assert not block._forward_hooks
    assert all(torch.equal(before[k], v) for k, v in pair.chat.model.state_dict().items())
    assert plain.isfinite().all()


def test_decode_completions_cuts_at_stop_tokens():
    pair = tiny_pair("llama")
    tokenizer = pair.tokenizer
    rows = [["w1", "w2", "<end_of_turn>", "w3"], ["w3", "w4", "<pad>", "<pad>"]]
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(row) for row in rows])
    assert decode_completions(tokenizer, ids) == [
        "w1 w2",
        "w3 w4",
    ]


def test_score_prompts_keeps_prompt_order_and_matches_batch_scores():
    pair = tiny_pair("gemma3")
    results = score_prompts(pair, PROMPTS, batch_size=2)
    assert [r.prompt for r in results] == PROMPTS
    reference = tuning_contribution(pair, **tokenize_prompts(pair, PROMPTS))
    for result, expected in zip(results, reference.tuco.tolist(), strict=True):
        assert result.tuco == pytest.approx(expected, abs=1e-5)
        assert len(result.tokens) == len(result.per_token)
        assert result.per_token[-1] == pytest.approx(result.tuco, abs=1e-6)
        alone = tokenize_prompts(pair, [result.prompt])["input_ids"][0]
        assert result.tokens == pair.tokenizer.convert_ids_to_tokens(alone.tolist())


@pytest.mark.slow
def test_real_gemma_3_decomposition_and_alpha_zero():
    """Gemma 3 270M with one perturbed MLP as the 'chat' model: exact reconstruction, alpha = 0
    is the base, and only blocks from the perturbed one on contribute."""
    from interp.models import load_model

    base = load_model("gemma-3-270m")
    chat = copy.deepcopy(base)
    chat.spec = "gemma-3-270m-perturbed"
    with torch.no_grad():
        decoder_layers(chat.model)[6].mlp.down_proj.weight.mul_(1.5)
    pair = ModelPair(base=base, chat=chat)
    batch = tokenize_prompts(pair, ["What is the capital of France?", "Write a haiku."])
    parts = decompose(pair, **batch)
    reference = residual_stream(chat.model, batch["input_ids"], [17], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    final = parts.embeddings + parts.pretrained_sum + parts.finetuning_sum
    scale = reference[real].abs().max()
    assert (final - reference[:, :, 0])[real].abs().max() <= TOLERANCE * scale
    scores = tuning_contribution(pair, **batch, with_output_contribution=True)
    assert scores.cumulative[:, :6].abs().max() == 0.0
    assert bool(((scores.tuco > 0) & (scores.tuco < 1)).all())
    with torch.no_grad(), alpha_scaled(pair, 0.0):
        scaled = chat.model(**batch).logits[:, -1]
    with torch.no_grad():
        plain = base.model(**batch).logits[:, -1]
    assert (scaled - plain).abs().max() <= TOLERANCE * plain.abs().max()


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_shared_prefill_gives_the_same_completions(family):
    loaded = tiny_pair(family).chat
    pair = ModelPair(base=tiny_model(family), chat=loaded)
    batch = tokenize_prompts(pair, PROMPTS, padding_side="left")
    options = dict(max_new_tokens=8, num_return_sequences=3)
    greedy = complete(loaded, **batch, max_new_tokens=8)
    shared = complete(loaded, **batch, **options, share_prefill=True)
    assert torch.equal(greedy.repeat_interleave(3, dim=0), shared)
    sampled = complete(loaded, **batch, **options, do_sample=True)
    shared_sampled = complete(loaded, **batch, **options, do_sample=True, share_prefill=True)
    assert torch.equal(sampled, shared_sampled)
    assert not torch.equal(sampled[0::3], sampled[1::3])  # the copies are sampled independently


def test_bfloat16_pair_gives_float32_scores_close_to_float32_pair():
    pair = tiny_pair("llama")
    batch = tokenize_prompts(pair, PROMPTS)
    reference = tuning_contribution(pair, **batch)
    for loaded in pair:
        loaded.model.to(torch.bfloat16)
    low = tuning_contribution(pair, **batch)
    assert low.tuco.dtype == torch.float32
    torch.testing.assert_close(low.tuco, reference.tuco, atol=0.02, rtol=0)
