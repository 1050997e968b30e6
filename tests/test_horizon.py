"""The generative horizon: entropy and branching factor against hand computations, position
classes of a chat-formatted sequence, own vs shared readings on a tiny pair."""

import json
import math

import pandas as pd
import pytest
import torch
from tiny_models import tiny_model, tiny_pair

from crosscoders.diffing.horizon import (
    HorizonConfig,
    branching_factor,
    entropy,
    prediction_classes,
    run_horizon,
)
from crosscoders.diffing.token_subsets import TemplateTokens
from interp.chat_template import render_chat
from interp.errors import InterpError
from interp.models import ModelPair
from interp.tuco import tokenize_prompts

PROMPTS = ["w1 w2 w3", "w4 w5 w6 w7 w8", "w9 w10"]


def test_branching_factor_of_distributions_with_known_entropy():
    uniform = torch.zeros(4)  # softmax -> 1/4 each: H = ln 4, BF = 4
    assert float(entropy(uniform)) == pytest.approx(math.log(4))
    assert float(branching_factor(entropy(uniform))) == pytest.approx(4.0)
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2, BF = 2^1.5
    skewed = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    assert float(entropy(skewed)) == pytest.approx(1.5 * math.log(2))
    assert float(branching_factor(entropy(skewed))) == pytest.approx(2**1.5)
    # a certain token (the rest at -inf): H = 0, BF = 1
    certain = torch.tensor([0.0, -float("inf"), -float("inf")])
    assert float(entropy(certain)) == 0.0 and branching_factor(0.0) == 1.0


def test_prediction_classes_of_a_chat_sequence():
    """Gemma's template as its tokenizer splits it (the tiny tokenizer drops newlines)."""
    tokenizer = tiny_model().tokenizer
    tokens = ["<bos>", "<start_of_turn>", "user", "\n", "w1", "w2", "<end_of_turn>", "\n"]
    tokens += ["<start_of_turn>", "model", "\n"]
    prompt_ids = tokenizer.convert_tokens_to_ids(tokens)
    response = tokenizer.convert_tokens_to_ids(["w7", "w8", "w9", "<end_of_turn>"])
    classes = prediction_classes(
        prompt_ids + response, len(prompt_ids), TemplateTokens.from_tokenizer(tokenizer), 2
    )
    predicted = tokens[1:] + ["w7", "w8", "w9", "<end_of_turn>"]
    by_token = dict(zip(predicted, classes, strict=True))
    assert by_token["<start_of_turn>"] == "template" and by_token["user"] == "template"
    assert by_token["w1"] == "prompt" and by_token["w2"] == "prompt"
    assert by_token["model"] == "template"
    assert classes[-4:] == ["first_response", "first_response", "later_response", "template"]


def sharpened_pair() -> ModelPair:
    """A pair whose chat model is the base with its logits multiplied by 8 (a scaled final
    norm would be undone by nothing: Gemma 3 has no logit soft-capping in the tiny config):
    chat's distributions are much narrower everywhere."""
    pair = tiny_pair("gemma3")
    chat = tiny_model("gemma3", seed=0)
    with torch.no_grad():
        chat.model.lm_head.weight = torch.nn.Parameter(chat.model.lm_head.weight * 8)
    chat.spec = "sharpened"
    return ModelPair(base=pair.base, chat=chat)


def test_a_sharper_chat_model_has_a_smaller_branching_factor(tmp_path):
    pair = sharpened_pair()
    summary = run_horizon(pair, PROMPTS, tmp_path, HorizonConfig(max_new_tokens=6, first_k=2))
    table = pd.read_parquet(tmp_path / "positions.parquet")
    assert set(table["class"]) == {"template", "prompt", "first_response", "later_response"}
    for generator in ("base", "chat"):
        rows = [c for c in summary["classes"] if c["generator"] == generator]
        by_model = {(c["model"], c["class"]): c["branching_factor"] for c in rows}
        for position_class in ("prompt", "first_response"):
            assert by_model[("chat", position_class)] < by_model[("base", position_class)]
    for row in summary["classes"]:
        assert row["branching_factor"] == pytest.approx(math.exp(row["mean_entropy"]))
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert (
        saved["n_prompts"] == 3
        and len(json.loads((tmp_path / "generations.json").read_text())) == 6
    )


def test_own_readings_equal_the_entropies_during_generation(tmp_path):
    """Teacher-forced entropy along a model's own greedy generation = the entropy of the
    distributions greedy decoding chose from (scores of HF generate)."""
    pair = tiny_pair("gemma3")
    run_horizon(pair, PROMPTS[:1], tmp_path, HorizonConfig(max_new_tokens=5, first_k=2))
    table = pd.read_parquet(tmp_path / "positions.parquet")
    own = table[(table["generator"] == "chat") & table["own"] & (table["offset"] >= 0)]
    batch = pair.tokenizer(
        [render_chat(pair.tokenizer, PROMPTS[0])], return_tensors="pt", add_special_tokens=False
    )
    output = pair.chat.model.generate(
        **batch,
        max_new_tokens=5,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    during = [float(entropy(score[0])) for score in output.scores][: len(own)]
    assert own.sort_values("offset")["entropy"].tolist() == pytest.approx(during, abs=1e-4)


def test_bad_input_is_one_line(tmp_path):
    pair = tiny_pair("gemma3")
    with pytest.raises(InterpError, match="no prompts"):
        run_horizon(pair, [], tmp_path)
    with pytest.raises(InterpError, match=">= 1"):
        run_horizon(pair, PROMPTS, tmp_path, HorizonConfig(max_new_tokens=0))


def test_rows_stay_aligned_when_a_generation_stops_early(tmp_path, monkeypatch):
    """A response that stops at once leaves masked positions after it: every reading must still
    sit at its own position (the prompt's entropies do not depend on who generated the rest,
    and the first response token's entropy is the prompt's last position's)."""
    import crosscoders.diffing.horizon as horizon

    pair = tiny_pair("gemma3")
    eos, w5, w6 = pair.tokenizer.convert_tokens_to_ids(["<eos>", "w5", "w6"])
    planted = {
        id(pair.base.model): torch.tensor([[w5, eos, 0, 0], [w5, w6, w5, w6]]),
        id(pair.chat.model): torch.tensor([[w6, w5, w6, w5], [w6, eos, 0, 0]]),
    }
    monkeypatch.setattr(horizon, "complete", lambda loaded, *a, **k: planted[id(loaded.model)])
    prompts = ["w1 w2 w3 w4", "w9"]  # different lengths: the second row is left-padded
    run_horizon(pair, prompts, tmp_path, HorizonConfig(max_new_tokens=4, first_k=1))
    table = pd.read_parquet(tmp_path / "positions.parquet")
    for model in ("base", "chat"):
        prompt_rows = table[(table["model"] == model) & (table["offset"] < 0)]
        by_generator = {
            g: rows.sort_values(["prompt", "offset"])["entropy"].tolist()
            for g, rows in prompt_rows.groupby("generator")
        }
        assert by_generator["base"] == pytest.approx(by_generator["chat"], abs=1e-6)
    batch = tokenize_prompts(pair, prompts[1:], padding_side="left")
    with torch.no_grad():
        last = float(entropy(pair.chat.model(**batch).logits[0, -1]))
    first = table[
        (table["generator"] == "chat") & (table["model"] == "chat") & (table["prompt"] == 1)
        & (table["offset"] == 0)
    ]  # fmt: skip
    assert first["entropy"].item() == pytest.approx(last, abs=1e-5)
    # the stopped row keeps its response tokens up to and including the stop token
    stopped = table[
        (table["generator"] == "chat") & (table["prompt"] == 1) & (table["offset"] >= 0)
    ]
    assert sorted(set(stopped["offset"])) == [0, 1]
