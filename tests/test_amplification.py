"""Logit amplification (EFT / proxy-tuning): exact ends of the alpha range in greedy generation,
the hand formula on logits, the KV cache, the steering map and its registered method."""

import pytest
import torch
from test_tuco import PROMPTS
from tiny_models import save_tiny, tiny_pair

from interp.amplification import amplified_logits, logit_amplified
from interp.errors import InterpError
from interp.generation import complete
from interp.models import ModelPair, load_model
from interp.tuco import tokenize_prompts
from steering.activations import encode_texts
from steering.logit_amplification import LogitAmplificationMap
from steering.methods import SteeringProblem, get_method
from steering.sites import resolve_sites
from steering.steering_map import load_map

MAX_NEW_TOKENS = 12


def test_amplified_logits_match_the_hand_computation():
    base = torch.tensor([1.0, -2.0, 0.5])
    chat = torch.tensor([3.0, 0.0, 0.5])
    # base + alpha (chat - base): alpha 2 -> [1 + 4, -2 + 4, 0.5]
    assert torch.equal(amplified_logits(base, chat, 2.0), torch.tensor([5.0, 2.0, 0.5]))
    assert torch.equal(amplified_logits(base, chat, 0.5), torch.tensor([2.0, -1.0, 0.5]))
    assert torch.equal(amplified_logits(base, chat, 1.0), chat)
    assert torch.equal(amplified_logits(base, chat, 0.0), base)


@pytest.fixture(scope="module")
def pair_and_prompts():
    pair = tiny_pair("gemma3")
    return pair, tokenize_prompts(pair, PROMPTS, padding_side="left")


def greedy(loaded, batch, use_cache=True):
    return complete(loaded, **batch, max_new_tokens=MAX_NEW_TOKENS, use_cache=use_cache)


def test_greedy_generation_at_alpha_one_is_chat_and_at_alpha_zero_is_base(pair_and_prompts):
    pair, batch = pair_and_prompts
    chat_tokens, base_tokens = greedy(pair.chat, batch), greedy(pair.base, batch)
    assert not torch.equal(chat_tokens, base_tokens), "the tiny pair must generate differently"
    with logit_amplified(pair, 1.0):
        assert torch.equal(greedy(pair.chat, batch), chat_tokens)
    with logit_amplified(pair, 0.0):
        assert torch.equal(greedy(pair.chat, batch), base_tokens)
    with logit_amplified(pair, 3.0):
        amplified = greedy(pair.chat, batch)
    assert not torch.equal(amplified, chat_tokens)


def test_forward_logits_equal_the_formula_and_the_cache_changes_nothing(pair_and_prompts):
    pair, batch = pair_and_prompts
    with torch.no_grad():
        base = pair.base.model(**batch).logits
        chat = pair.chat.model(**batch).logits
        with logit_amplified(pair, 2.5):
            mixed = pair.chat.model(**batch).logits
            cached, uncached = greedy(pair.chat, batch), greedy(pair.chat, batch, use_cache=False)
    assert torch.allclose(mixed, base + 2.5 * (chat - base), atol=1e-5)
    assert torch.equal(cached, uncached)


def test_map_strengths_follow_alpha_on_both_steered_models(pair_and_prompts):
    """Steering chat: alpha = 1 - lambda (inverse 1 + lambda); steering base: alpha = lambda."""
    pair, batch = pair_and_prompts
    with torch.no_grad():
        base = pair.base.model(**batch).logits
        chat = pair.chat.model(**batch).logits

        def steered(role, strength, inverse=False):
            steering_map = LogitAmplificationMap.from_pair(pair, role)
            model = getattr(pair, role).model
            with steering_map.apply(model, strength, inverse=inverse):
                return model(**batch).logits

        for role, strength, inverse, alpha in [
            ("chat", 0.25, False, 0.75),
            ("chat", 0.5, True, 1.5),
            ("base", 2.0, False, 2.0),
            ("base", 0.5, True, -0.5),
        ]:
            expected = base + alpha * (chat - base)
            assert torch.allclose(steered(role, strength, inverse), expected, atol=1e-5), (
                role,
                strength,
                inverse,
            )
        assert torch.equal(steered("chat", 0.0), chat)


def test_map_round_trip_and_registered_method(tmp_path):
    pair = tiny_pair("gemma3")
    folders = {role: save_tiny(getattr(pair, role), tmp_path / role) for role in ("base", "chat")}
    on_disk = ModelPair(
        base=load_model(str(folders["base"])), chat=load_model(str(folders["chat"]))
    )
    method = get_method("amplification")
    source = encode_texts(on_disk.tokenizer, PROMPTS)
    problem = SteeringProblem(
        on_disk.base.model,
        resolve_sites(on_disk.base.model, "block"),
        source,
        source,
        on_disk.chat.model,
        pair=on_disk,
        steered_role="base",
    )
    fitted, log = method.fit(problem, {})
    assert isinstance(fitted, LogitAmplificationMap) and log is None
    assert fitted.info["method"] == "amplification"
    fitted.save(tmp_path / "map")
    loaded = load_map(tmp_path / "map")
    assert type(loaded) is LogitAmplificationMap
    batch = tokenize_prompts(on_disk, PROMPTS, padding_side="left")
    with loaded.apply(on_disk.base.model, 1.0):  # companion loaded from its recorded spec
        assert torch.equal(greedy(on_disk.base, batch), greedy(on_disk.chat, batch))
    with pytest.raises(InterpError, match="every block"):
        problem.sites = resolve_sites(on_disk.base.model, "block", [1])
        method.fit(problem, {})
    with pytest.raises(InterpError, match="takes no option"):
        method.fit(problem, {"alpha": 2})


def test_evaluation_points_at_full_strength_are_the_other_models(tmp_path):
    """In `interp steer eval`: strength 1 on remove-refusal (chat steered) gives base's
    perplexity and responses, on induce-refusal (base steered) chat's."""
    from test_steering_training import word_texts

    from steering.evaluate import EvalConfig, perplexity, run_evaluation, steered_responses

    pair = tiny_pair("gemma3")
    recipes = {"harmful": (0, 29), "chat-benign": (50, 79), "wiki": (30, 49)}

    def load_texts(recipe: str, split: str) -> list[str]:
        first, last = recipes[recipe]
        return word_texts(first, last, 24, seed=0 if split == "train" else 1)

    config = EvalConfig(
        methods=["amplification"],
        n=4,
        n_eval=3,
        n_perplexity=3,
        max_new_tokens=4,
        strengths={"amplification": [0.0, 1.0, 2.0]},
    )
    table = run_evaluation(
        pair, config, tmp_path, load_texts, judge=lambda r: "w5" in r, progress=lambda _: None
    )
    wiki = load_texts("wiki", "heldout")[:3]
    full = table[table.strength == 1.0].set_index("task")
    assert full.loc["remove-refusal", "perplexity"] == pytest.approx(perplexity(pair.base, wiki))
    assert full.loc["induce-refusal", "perplexity"] == pytest.approx(perplexity(pair.chat, wiki))
    prompts = load_texts("harmful", "heldout")[:3]
    chat_rate = sum("w5" in r for r in steered_responses(pair.chat, prompts, None, 0, 4)) / 3
    assert full.loc["induce-refusal", "concept_rate"] == pytest.approx(chat_rate)
    assert len(table) == 2 * 3
