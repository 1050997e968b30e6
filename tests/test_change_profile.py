"""The change profile on a planted pair (a known bias added at one layer) and its token classes
on a hand-made stream."""

import numpy as np
import pytest
import torch
from test_adl import BIAS_NORM, LAYER, planted_pair

from crosscoders.diffing.change_profile import (
    CLASSES,
    markdown,
    profile_from_cache,
    profile_from_pass,
    token_classes,
)
from crosscoders.diffing.token_subsets import TemplateTokens

S, E, USER, MODEL, NL = 4, 5, 6, 7, 8  # the tiny tokenizer's ids


def test_token_classes_of_a_hand_made_stream():
    template = TemplateTokens(start_of_turn=S, end_of_turn=E)
    # seq 0: wiki; seq 1: <s> user \n a b <e> \n <s> model \n c d <e>
    token_ids = np.array([20, 21, 22, S, USER, NL, 30, 31, E, NL, S, MODEL, NL, 40, 41, E])
    seq_ids = np.array([0, 0, 0] + [1] * 13)
    classes = token_classes(token_ids, seq_ids, template)
    names = np.array([""] * len(token_ids), dtype=object)
    for name in CLASSES:
        assert not (names[classes[name]] != "").any(), "classes overlap"
        names[classes[name]] = name
    assert names.tolist() == (
        ["wiki"] * 3
        + ["template"] * 3
        + ["prompt"] * 2
        + ["template"] * 5
        + ["response"] * 2
        + ["template"]
    )


def test_profile_of_a_planted_bias_is_its_norm_over_the_base_norm():
    pair, _ = planted_pair()
    texts = ["w1 w2 w3 w4 w5", "w9 w8 w7"]
    chats = [("w1 w2", "w3 w4 w5")]
    profile = profile_from_pass(pair, texts, chats, batch_size=2, progress=False)
    rows = {(r["layer"], r["class"]): r for r in profile.rows()}
    for name in CLASSES:
        assert rows[(0, name)]["relative_norm"] == 0.0  # the models agree before the bias
    # by hand: at the planted layer every token's difference is the bias itself
    tokenizer = pair.tokenizer
    ids = tokenizer(texts[0], return_tensors="pt").input_ids
    with torch.no_grad():
        base = pair.base.model(input_ids=ids, output_hidden_states=True).hidden_states[LAYER + 1]
    short = tokenizer(texts[1], return_tensors="pt").input_ids
    with torch.no_grad():
        base_short = pair.base.model(input_ids=short, output_hidden_states=True).hidden_states[
            LAYER + 1
        ]
    norms = torch.cat([base[0].norm(dim=-1), base_short[0].norm(dim=-1)])
    wiki = rows[(LAYER, "wiki")]
    assert wiki["n_tokens"] == 8
    assert wiki["relative_norm"] == pytest.approx(BIAS_NORM / norms.mean().item(), rel=1e-4)
    assert wiki["mean_ratio"] == pytest.approx((BIAS_NORM / norms).mean().item(), rel=1e-4)
    # the tiny tokenizer drops the template newlines, so "w1" and "w3" sit where they would be
    assert rows[(LAYER, "response")]["n_tokens"] == 2 and rows[(LAYER, "prompt")]["n_tokens"] == 1
    assert "| 1 |" in markdown(profile.rows())


def test_profile_from_cache_matches_the_cached_activations(tmp_path):
    from cache_support import mixed_source
    from tiny_models import tiny_pair

    from interp.cache import ActivationCache, build_cache, cache_config

    pair = tiny_pair()
    config = cache_config(pair, [1, 2], "wiki:0.5,chat:0.5", n_tokens=300, ctx=24, dtype="fp32")
    build_cache(pair, config, tmp_path, source=mixed_source(), progress=False)
    cache = ActivationCache(tmp_path)
    template = TemplateTokens.from_tokenizer(pair.tokenizer)
    profile = profile_from_cache(cache, template, batch_size=64, progress=False)
    acts = cache.gather(np.arange(cache.n_tokens))  # [tokens, base/1 base/2 chat/1 chat/2, d]
    tokens = cache.tokens(np.arange(cache.n_tokens))
    classes = token_classes(tokens["token_ids"].numpy(), tokens["seq_ids"].numpy(), template)
    rows = {(r["layer"], r["class"]): r for r in profile.rows()}
    for i, layer in enumerate([1, 2]):
        delta = (acts[:, 2 + i] - acts[:, i]).norm(dim=-1)
        base = acts[:, i].norm(dim=-1)
        for name in CLASSES:
            mask = torch.from_numpy(classes[name])
            if not mask.any():
                continue
            expected = (delta[mask].sum() / base[mask].sum()).item()
            assert rows[(layer, name)]["relative_norm"] == pytest.approx(expected, rel=1e-5)
