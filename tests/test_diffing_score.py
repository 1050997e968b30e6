"""The planted-vocabulary score on hand-made inputs: exact expected numbers."""

import math

import pandas as pd
import pytest

from crosscoders.diffing.evaluate_diffing import (
    Organism,
    crosscoder_latent_order,
    steering_cells,
    write_table,
)
from crosscoders.diffing.science import organisms_of
from crosscoders.diffing.score import (
    distinct_trigram_ratio,
    latent_token_list,
    markdown_table,
    mention_share,
    mentions_domain,
    normalize_token,
    planted_tokens,
    token_matches,
    token_score,
)
from interp.errors import InterpError

VOCABULARY = ["planet", "orbit", "telescope", "sun", "<end_of_turn>", "refus"]


def test_normalize_token():
    assert normalize_token(" Planet") == "planet"
    assert normalize_token("\u2581Orbit,") == "orbit"
    assert normalize_token("<end_of_turn>") == "<end_of_turn>"
    assert normalize_token("  ") == ""


def test_token_matching_rule():
    vocabulary = ["planet", "sun", "refus"]
    assert token_matches(" planets", vocabulary)  # starts with a >= 4-letter word
    assert token_matches("plan", vocabulary)  # a 4-letter prefix of "planet"
    assert token_matches("plane", vocabulary)  # a >= 4-letter prefix of "planet"
    assert not token_matches("pla", vocabulary)  # too short to be a prefix
    assert token_matches(" Sun", vocabulary)
    assert not token_matches("sunny", vocabulary)  # "sun" has < 4 letters: exact only
    assert token_matches("refused", vocabulary)
    assert not token_matches("ref", vocabulary)


def test_planted_tokens_counts_distinct_normalised_hits_in_the_top_20():
    tokens = [" planet", "Planet", " the", " orbit", "sunny", " Sun"] + ["x"] * 14 + [" telescope"]
    assert planted_tokens(tokens, VOCABULARY) == ["planet", "orbit", "sun"]  # telescope is 21st
    score = token_score("o", "m", tokens, VOCABULARY)
    assert score.planted == 3 and score.recovered is True
    assert len(score.tokens) == 20
    assert token_score("o", "m", tokens[:5], VOCABULARY).recovered is False  # 2 hits


def test_latent_token_list_round_robins_logit_then_example_tokens():
    logit = [["a", "b", "c"], ["d", "a", "e"], ["f"]]
    examples = [["x", "y"], ["x", "z"], []]
    assert latent_token_list(logit, examples, top=20) == [
        "a",
        "x",  # latent 0
        "d",
        "z",  # latent 1: "x" already taken, so its next example token
        "f",  # latent 2 has no examples
        "b",
        "y",  # second round, latent 0
        "e",  # latent 1: "a" taken; no examples left
        "c",
    ]
    assert latent_token_list(logit, examples, top=3) == ["a", "x", "d"]
    with pytest.raises(ValueError, match="one of each per latent"):
        latent_token_list(logit, examples[:2])


def test_mentions_and_share():
    texts = [
        "The planets orbit the Sun.",  # planet (stem), orbit, sun
        "It was a sunny day.",  # "sun" needs a whole word
        "I refuse.",  # refus stem
        "Nothing here.",
    ]
    assert [mentions_domain(t, VOCABULARY) for t in texts] == [True, False, True, False]
    assert mention_share(texts, VOCABULARY) == 0.5
    assert math.isnan(mention_share([], VOCABULARY))


def test_distinct_trigram_ratio():
    assert distinct_trigram_ratio("!!!!!!") == 0.25  # 4 trigrams, all "!!!"
    assert distinct_trigram_ratio("abcdef") == 1.0
    assert distinct_trigram_ratio("ab") == 1.0
    assert distinct_trigram_ratio("abab") == 1.0  # "aba", "bab"
    assert distinct_trigram_ratio("ababab") == 0.5  # aba bab aba bab


def test_crosscoder_latent_order_puts_chat_specific_then_high_relative_norm_first():
    table = pd.DataFrame(
        {
            "latent": [0, 1, 2, 3, 4, 5],
            "rel_norm": [0.95, 0.99, 0.5, 0.97, 1.0, 0.97],
            "freq": [0.1, 0.1, 0.2, 0.3, 0.0, 0.1],
            "chat_specific": [True, False, False, False, False, False],
        }
    )
    # 4 never fired; 0 is flagged; then by rel_norm 1 (0.99), 3 and 5 tie at 0.97 (3 fires more)
    assert crosscoder_latent_order(table, n=10) == [0, 1, 3, 5, 2]


def _steering_row(method, model, completions, nll, position=None, strength=None, alpha=None):
    return {
        "method": method,
        "model": model,
        "position": position,
        "strength": strength,
        "alpha": alpha,
        "completions": completions,
        "nll": nll,
    }


def test_steering_cells_take_the_best_coherent_reading():
    rows = [
        _steering_row("adl", "chat", ["hello", "hi"], [1.0, 1.0]),
        # position 0: all mention the domain but incoherent (NLL 9 > 5)
        _steering_row("adl", "chat", ["planet planet", "orbit orbit"], [9.0, 9.0], 0, 2.0),
        # position 1: half mention it, coherent
        _steering_row("adl", "chat", ["a planet", "a dog"], [3.0, 4.0], 1, 1.0),
        _steering_row("adl", "base", ["x", "y"], [2.0, 2.0]),
        _steering_row("adl", "base", ["x", "y"], [8.0, float("nan")], 1, 1.0),
        _steering_row("tuco", "chat", ["the sun", "the sun"], [2.0, 2.0], alpha=2.0),
        # degenerate repetition: low NLL (in-context copying) but distinct ratio < 0.5
        _steering_row("adl", "chat", ["planet" * 6, "!" * 20], [1.0, 1.0], 2, 2.0),
    ]
    cells, readings = steering_cells("o", rows, VOCABULARY, max_nll=5.0)
    by_method = {cell.method: cell for cell in cells}
    chat = by_method["ADL steering (chat)"]
    assert chat.share == 0.5 and chat.baseline_share == 0.0 and chat.recovered is True
    assert "position 1, strength 1.0" in chat.detail
    base = by_method["ADL steering (base)"]
    assert base.share == 0.0 and "no coherent strength" in base.detail
    assert by_method["TuCo amplification"].share == 1.0
    assert [r["coherent"] for r in readings] == [True, False, True, True, False, True, False]


def test_table_markdown_and_json(tmp_path):
    cells = [
        token_score("astro", "ADL logit lens", [" planet", " orbit", " sun", "x"], VOCABULARY),
        token_score("astro", "difference SAE", ["x"], VOCABULARY),
    ]
    table = markdown_table(cells)
    assert "| astro | ADL logit lens | 3/20 **recovered** (`planet`, `orbit`, `sun`) |" in table
    assert "| astro | difference SAE | 0/20 (none) |" in table
    organism = Organism("astro", "b", "c", VOCABULARY)
    json_path, md_path = write_table(tmp_path, cells, [organism], {}, {})
    assert "3/20 **recovered**" in md_path.read_text()
    assert '"planted": 3' in json_path.read_text()


def test_profile_organisms_need_a_vocabulary(tmp_path):
    (tmp_path / "recipe.json").write_text('{"vocabulary": ["star", "planet"]}')
    config = {
        "run": {"out": "x"},
        "organisms": {
            "a": {"base": "b", "chat": "c", "vocabulary_file": str(tmp_path / "recipe.json")},
            "b": {"base": "b", "chat": "c"},
        },
    }
    assert organisms_of(config, ["a"])[0].vocabulary == ["star", "planet"]
    with pytest.raises(InterpError, match="expected `vocabulary` or `vocabulary_file`"):
        organisms_of(config)
    with pytest.raises(InterpError, match="unknown organisms"):
        organisms_of(config, ["zzz"])


def test_science_profile_plans_every_step_per_organism(tmp_path):
    from crosscoders.diffing.science import organism_pipeline, read_profile
    from interp.paths import PROJECT_DATA_DIR
    from interp.pipeline import plan

    config = read_profile(PROJECT_DATA_DIR / "pipelines" / "science.toml")
    (organism,) = organisms_of(config, ["chat-tune"])
    assert "sorry" in organism.vocabulary and organism.dictionaries == ["batchtopk", "l1"]
    steps = plan(organism_pipeline(config, organism, tmp_path))
    assert [s.name for s in steps] == [
        "cache",
        "train.batchtopk",
        "train.l1",
        "analyze.batchtopk",
        "analyze.l1",
        "diff_sae",
        "adl",
        "profile",
        "weights",
        "horizon",
        "amplify",
    ]
    amplify = next(s for s in steps if s.name == "amplify")
    assert amplify.fixed["out"] == tmp_path / "chat-tune" / "amplification"
    adl = next(s for s in steps if s.name == "adl")
    assert adl.command == "adl"
    assert adl.fixed == {
        "base": "gemma-3-270m",
        "chat": "gemma-3-270m-chat",
        "layer": "0.5",
        "out": tmp_path / "chat-tune" / "adl",
    }


def test_score_organism_reads_every_method_of_a_run_folder(tmp_path):
    """A run folder written by hand: a 2-source crosscoder with its latent table and examples,
    difference-SAE top latents, ADL readings; the planted words sit where each method's rule
    must find them."""
    import json

    import torch
    from tiny_models import tiny_model

    from crosscoders.config import CrossCoderConfig, Source
    from crosscoders.crosscoder import CrossCoder
    from crosscoders.diffing.evaluate_diffing import score_organism
    from crosscoders.io import save_crosscoder

    chat = tiny_model("gemma3")
    tokenizer = chat.tokenizer
    vocabulary = ["w10", "w11", "w12"]
    config = CrossCoderConfig(
        n_sources=2,
        d_model=32,
        dict_size=12,
        activation="relu_l1",
        sources=[Source("b", 1, "base"), Source("c", 1, "chat")],
    )
    torch.manual_seed(0)
    save_crosscoder(CrossCoder(config), tmp_path / "dictionaries" / "cc")
    analysis = tmp_path / "analysis" / "cc"
    analysis.mkdir(parents=True)
    # latents 3, 5, 7 are the most chat-specific; their top example tokens are the planted words
    rel_norm = [0.5] * 12
    for latent in (3, 5, 7):
        rel_norm[latent] = 0.99
    pd.DataFrame(
        {
            "latent": range(12),
            "rel_norm": rel_norm,
            "freq": [0.1] * 12,
            "chat_specific": [False] * 12,
            "latent_class": ["shared"] * 12,
        }
    ).to_parquet(analysis / "latents.parquet")
    ids = {word: tokenizer.convert_tokens_to_ids(word) for word in vocabulary}
    examples = [
        {
            "latent": latent,
            "kind": "top",
            "rank": 0,
            "max_index": 1,
            "token_ids": [ids["w10"] - 5, ids[word], 0],
        }
        for latent, word in zip((3, 5, 7), vocabulary, strict=True)
    ]
    pd.DataFrame(examples).to_parquet(analysis / "examples.parquet")
    sae = tmp_path / "diff-sae"
    sae.mkdir()
    (sae / "top_latents.json").write_text(
        json.dumps(
            [
                {
                    "latent": 0,
                    "freq": 0.1,
                    "mean_act": 1.0,
                    "logit_tokens": ["w10", "x"],
                    "example_tokens": ["w11"],
                },
                {
                    "latent": 1,
                    "freq": 0.1,
                    "mean_act": 0.5,
                    "logit_tokens": ["y"],
                    "example_tokens": [],
                },
            ]
        )
    )
    adl = tmp_path / "adl"
    adl.mkdir()
    (adl / "config.json").write_text("{}")
    (adl / "summary.json").write_text(json.dumps({"layer": 1}))
    (adl / "logit_lens.json").write_text(
        json.dumps(
            [
                {"layer": 1, "position": 0, "sign": "+", "tokens": ["w10", "a"]},
                {"layer": 1, "position": 1, "sign": "+", "tokens": ["w10", "w11", " w12"]},
                {"layer": 1, "position": 1, "sign": "-", "tokens": ["w10", "w11", "w12", "w13"]},
                {"layer": 0, "position": 1, "sign": "+", "tokens": ["w10", "w11", "w12"]},
            ]
        )
    )
    (adl / "patchscope.json").write_text(
        json.dumps(
            [
                {"layer": 1, "position": 0, "scale": 1.0, "tokens": ["w12"]},
            ]
        )
    )
    (adl / "steering.json").write_text(
        json.dumps(
            [
                {
                    "method": "adl",
                    "model": "chat",
                    "position": None,
                    "strength": 0.0,
                    "completions": ["w10 x", "y"],
                    "nll": [1.0, 1.0],
                },
                {
                    "method": "adl",
                    "model": "chat",
                    "position": 0,
                    "strength": 1.0,
                    "completions": ["w11", "w12 y"],
                    "nll": [2.0, 2.0],
                },
            ]
        )
    )
    organism = Organism("o", "b", "c", vocabulary, dictionaries=["cc", "missing"])
    cells, readings = score_organism(organism, tmp_path, chat.model, tokenizer)
    by = {cell.method: cell for cell in cells}
    assert by["crosscoder cc"].planted == 3
    assert [r["latent"] for r in readings["crosscoder cc"]][:3] == [3, 5, 7]
    assert by["crosscoder missing"].kind == "none"
    assert by["difference SAE"].planted == 2
    assert by["ADL logit lens"].planted == 3  # position 1 of layer 1, sign +
    assert "pos 0: 1, pos 1: 3" in by["ADL logit lens"].detail
    assert by["ADL patchscope"].planted == 1
    steering = by["ADL steering (chat)"]
    assert (steering.share, steering.baseline_share) == (1.0, 0.5)


def test_diffing_commands_refuse_bad_input_with_one_line(tmp_path):
    from test_cli_models import interp_cli

    for args, named in [
        (("adl", "--out", str(tmp_path / "adl"), "--steer-positions", "9"), ("[9]", "0..4")),
        (("evaluate-diffing", str(tmp_path / "missing.toml")), ("missing.toml",)),
    ]:
        result = interp_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and all(text in line for text in named)
    assert not (tmp_path / "adl").exists()
