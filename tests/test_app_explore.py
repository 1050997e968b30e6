"""The app's exploring features in Streamlit's AppTest: the state in the URL (run, dictionary,
latent, Latents filters), the feature-density histogram and top tokens per latent (against hand
counts), the Search page (against the exploring API's own encoding), steering from the Latent
page (against `Explorer.steer`), and the Known-answers page on diffing outputs the writers
produced on the tiny pair. Plus the pure helpers: URL parsing, method colours, log axes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from app_fixtures import DIFFING_ORGANISM, build_diffing_results, build_run_folder, open_page
from test_app_live import live_run  # noqa: F401  (module fixture: tiny models + real crosscoder)

from app.diffing_results import adl_steering_table, logit_lens_table, score_table
from app.latent_tokens import label_tokens, peak_tokens, top_tokens_table
from app.render import (
    METHOD_COLORS,
    density_histogram,
    display_token,
    histogram,
    method_color,
    visible_whitespace,
)
from app.search import per_token_latents
from app.url_state import format_range, parse_bool, parse_list, parse_range
from steering.explore import open_run

N_LATENTS = 512
SEARCH_TEXT = "w1 w5 w9 user w12 w3 w7"


@pytest.fixture(scope="module")
def two_dictionaries(tmp_path_factory) -> Path:
    """A synthetic run folder with two analysed dictionaries of different tables."""
    run = tmp_path_factory.mktemp("url") / "run"
    build_run_folder(run, n_latents=N_LATENTS, n_example_latents=32, with_steering=False)
    build_run_folder(
        run, n_latents=N_LATENTS, n_example_latents=32, dict_name="second", seed=1,
        with_tuco=False, with_steering=False,
    )  # fmt: skip
    return run


@pytest.fixture(scope="module")
def diffing_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("diffing") / "run"
    build_run_folder(run, n_latents=64, n_example_latents=4, with_tuco=False, with_steering=False)
    build_diffing_results(run)
    return run


# --- pure helpers -------------------------------------------------------------------------------


def test_url_values_parse_and_format_by_hand():
    assert parse_range("0.25,0.9") == (0.25, 0.9) and format_range((0.25, 0.9)) == "0.25,0.9"
    assert parse_list("chat-only,shared") == ["chat-only", "shared"] and parse_list("") == []
    assert parse_bool("1") is True and parse_bool("0") is False
    for bad, parse in (("0.9,0.1", parse_range), ("a,b", parse_range), ("yes", parse_bool)):
        with pytest.raises(ValueError):
            parse(bad)


def test_whitespace_is_visible_and_method_colours_are_fixed():
    assert visible_whitespace(" sorry\n\t") == "·sorry↵→"
    assert visible_whitespace("▁Paris") == "·Paris"  # SentencePiece's space too
    assert display_token(" <b>") == "·&lt;b&gt;"
    assert method_color("latents") != method_color("tuco")
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)  # one colour per method
    assert method_color("ADL steering (chat)") == METHOD_COLORS["adl"]
    assert method_color("crosscoder batchtopk") == METHOD_COLORS["crosscoder"]
    assert method_color("some new method") == method_color("some new method")


def test_log_axes_put_one_label_per_decade():
    figure = histogram(np.array([1.0, 2.0, 30.0]), "t", "x", bins=3, log_y=True)
    assert figure.layout.yaxis.type == "log" and figure.layout.yaxis.dtick == 1


def test_density_histogram_counts_dead_latents_apart():
    freq = np.array([0.0, 0.0, 0.0, 1e-3, 1e-3, 1e-2, 0.1])
    figure, n_dead = density_histogram(freq, bins=4)
    assert n_dead == 3
    assert int(np.sum(figure.data[0].y)) == 4  # the live latents only
    assert "3 dead" in figure.layout.title.text
    centers = np.asarray(figure.data[0].x)
    assert centers.min() > -3.0 and centers.max() < -1.0  # log10 of 1e-3 .. 1e-1


def test_top_tokens_count_the_peak_token_of_each_top_example():
    ids = pa.array([[5, 6, 7], [6, 5, 9], [8, 6, 6], [4, 4, 4], [1, 2, 3]], pa.list_(pa.int32()))
    examples = pa.table(
        {
            "latent": pa.array([0, 0, 0, 1, 1], pa.int64()),
            "kind": ["top", "top", "top", "top", "q0.5"],
            "activation": pa.array([3.0, 2.0, 1.0, 5.0, 9.0], pa.float32()),
            "max_index": pa.array([1, 0, 1, 2, 0], pa.int32()),
            "token_ids": ids,
        }
    )
    peaks = peak_tokens(examples)  # peaks: 6, 6, 6 for latent 0; 4 for latent 1; q0.5 left out
    assert list(peaks.token_id) == [6, 6, 6, 4]
    table = top_tokens_table(peaks, n=2)
    assert table.to_dict("list") == {
        "latent": [0, 1],
        "token_id": [6, 4],
        "count": [3, 1],
        "activation": [3.0, 5.0],
    }
    labels = label_tokens(table, {6: " sorry", 4: "\n"})
    assert labels.to_dict() == {0: "·sorry ×3", 1: "↵ ×1"}


def test_diffing_tables_by_hand():
    lens = [
        {"layer": 1, "position": 0, "sign": "+", "tokens": [" a", "b"], "probs": [0.6, 0.1]},
        {"layer": 0, "position": 0, "sign": "+", "tokens": ["c"], "probs": [0.9]},
        {"layer": 0, "position": 0, "sign": "-", "tokens": ["d"], "probs": [0.5]},
    ]
    table = logit_lens_table(lens, 0, "+")
    assert table.to_dict("list") == {
        "layer": [0, 1],
        "top tokens": ["c", "·a  b"],
        "top probability": [0.9, 0.6],
    }
    steering = adl_steering_table(
        [{"method": "adl", "model": "chat", "position": 1, "strength": 2.0, "nll": [1.0, 3.0]}]
    )
    assert steering.mean_nll[0] == pytest.approx(2.0)
    assert steering.perplexity[0] == pytest.approx(np.exp(2.0))
    cells = {"cells": [{"organism": "o", "method": "m", "kind": "tokens", "planted": 4,
                        "hits": ["x"], "recovered": True, "detail": "d"}]}  # fmt: skip
    assert score_table(cells).loc[0, ["score", "recovered", "hits"]].tolist() == [4, True, "x"]


# --- URL state ----------------------------------------------------------------------------------


def hand_filter(latents: pd.DataFrame, classes, rel_norm, min_freq) -> pd.DataFrame:
    return latents[
        latents.latent_class.isin(classes)
        & latents.rel_norm.between(*rel_norm)
        & (latents.freq >= min_freq)
    ]


def test_a_shared_latents_link_opens_the_same_dictionary_and_filters(two_dictionaries):
    query = {
        "dictionary": "second",
        "classes": "chat-only,shared",
        "rel_norm": "0.3,0.95",
        "min_freq": "0.0001",
    }
    at = open_page(two_dictionaries, "latents", **query)
    at.switch_page("views/latents.py").run()  # the page reads the URL the link carried
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception
    latents = pd.read_parquet(two_dictionaries / "analysis" / "second" / "latents.parquet")
    expected = hand_filter(latents, ["chat-only", "shared"], (0.3, 0.95), 1e-4)
    other = pd.read_parquet(two_dictionaries / "analysis" / "crosscoder" / "latents.parquet")
    assert len(expected) != len(hand_filter(other, ["chat-only", "shared"], (0.3, 0.95), 1e-4))
    assert set(at.dataframe[0].value.latent) == set(expected.latent)
    assert at.selectbox(key="dictionary").value == "second"
    assert at.multiselect(key="latents_classes").value == ["chat-only", "shared"]
    # a change in the page is written back into the URL (what a copied link carries)
    at.slider(key="latents_cosine").set_value((0.0, 1.0)).run()
    assert at.query_params["cosine"] == "0,1"
    assert at.query_params["dictionary"] == "second"
    assert at.query_params["run"] == str(two_dictionaries)


def test_the_latent_page_keeps_latent_and_dictionary_in_the_url(two_dictionaries):
    at = open_page(two_dictionaries, "latent", latent="17", dictionary="second")
    at.switch_page("views/latent.py")
    at.query_params["latent"], at.query_params["dictionary"] = "17", "second"
    at.run()
    assert at.title[0].value.startswith("Latent 17 ")
    second = pd.read_parquet(two_dictionaries / "analysis" / "second" / "latents.parquet")
    shown = {m.label: m.value for m in at.metric}
    assert shown["Relative norm (1 = chat-only)"] == f"{second.rel_norm[17]:.3f}"
    assert at.query_params["latent"] == "17" and at.query_params["dictionary"] == "second"


# --- Latents: density and top tokens ------------------------------------------------------------


def test_latents_page_density_and_top_tokens(two_dictionaries):
    at = open_page(two_dictionaries, "latents")
    latents = pd.read_parquet(two_dictionaries / "analysis" / "crosscoder" / "latents.parquet")
    dead = int((latents.freq == 0).sum())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["dead latents (never fired)"] == f"{dead:,}"
    table = at.dataframe[0].value
    examples = pd.read_parquet(two_dictionaries / "analysis" / "crosscoder" / "examples.parquet")
    strings = json.loads((two_dictionaries / "analysis/crosscoder/tokens.json").read_text())
    top = examples[(examples.latent == 3) & (examples.kind == "top")]
    peaks = pd.Series([strings["token_strings"][str(t[i])] for t, i in
                       zip(top.token_ids, top.max_index, strict=True)])  # fmt: skip
    first = visible_whitespace(peaks.value_counts().index[0])
    label = table.set_index("latent").top_tokens[3]
    assert label.split(", ")[0].rsplit(" ×", 1)[1] == str(peaks.value_counts().iloc[0])
    assert first in label
    assert table.set_index("latent").top_tokens[N_LATENTS - 1] == ""  # no examples stored


def test_empty_nu_scatter_says_why(two_dictionaries, tmp_path):
    run = Path(shutil.copytree(two_dictionaries, tmp_path / "run"))
    path = run / "analysis" / "crosscoder" / "latents.parquet"
    table = pd.read_parquet(path)
    table.loc[table.latent_class == "chat-only", "latent_class"] = "other"
    table.to_parquet(path)
    at = open_page(run, "latents")
    assert "no chat-only latent" in at.info[0].value and "That is a finding" in at.info[0].value


# --- Search and steering on the tiny pair -------------------------------------------------------


def test_search_page_equals_the_api_encoding(live_run):  # noqa: F811
    at = open_page(live_run, "search", timeout=180)
    at.text_area(key="search_text").input(SEARCH_TEXT).run(timeout=180)
    assert not at.exception and not at.error, [e.value for e in at.error]
    explorer = open_run(live_run, "crosscoder")
    encoded = explorer.encode(SEARCH_TEXT)
    per_token = next(d.value for d in at.dataframe if "rank" in d.value.columns)
    expected_rows = [
        (position, latent, value)
        for position in range(len(encoded.tokens))
        if not bool(encoded.special[position])
        for latent, value in list(encoded.active(position).items())[:5]
    ]
    assert len(expected_rows) > 0
    assert list(zip(per_token.position, per_token.latent, strict=True)) == [
        (p, j) for p, j, _ in expected_rows
    ]
    np.testing.assert_allclose(per_token.activation, [v for _, _, v in expected_rows], rtol=1e-6)
    top = next(d.value for d in at.dataframe if "max_activation" in d.value.columns)
    api_top = explorer.top_latents(SEARCH_TEXT, n=20)
    assert list(top.latent) == list(api_top.latent)
    # the per-model encoder inputs sum with the bias to the pre-activation of the kept latents
    table = per_token_latents(encoded, explorer.coder, None, 5)
    bias = explorer.coder.encoder_bias().detach().numpy()[table.latent]
    np.testing.assert_allclose(
        table.input_base + table.input_chat + bias, table.activation, rtol=1e-4, atol=1e-5
    )
    assert at.query_params["text"] == SEARCH_TEXT


def test_latent_page_steers_both_models_with_the_api(live_run):  # noqa: F811
    latent = 3
    at = open_page(live_run, "latent", timeout=180, latent=str(latent))
    at.radio(key="latent_steer_mode").set_value("add")
    at.slider(key="latent_steer_strength").set_value(4.0)
    at.number_input(key="latent_steer_tokens").set_value(6)
    at.text_area(key="latent_steer_prompt").input("w1 w2 w3")
    at.button(key="latent_steer_button").click().run(timeout=180)
    assert not at.exception and not at.error, [e.value for e in at.error]
    value = next(n.value for n in at.number_input if n.key.startswith("latent_steer_value"))
    explorer = open_run(live_run, "crosscoder")
    expected = []
    for model in ("base", "chat"):
        for strength in (4.0, 0.0):
            expected.append(explorer.steer(latent, "w1 w2 w3", strength, value, model, "add", 6))
    texts = [t.value for t in at.text]
    assert texts[-4:] == expected
    assert expected[0] != expected[1] or expected[2] != expected[3]  # steering changed something


# --- Known answers ------------------------------------------------------------------------------


def test_known_answers_page_shows_what_the_writers_wrote(diffing_run):
    at = open_page(diffing_run, "diffing", timeout=120)
    assert not at.exception and not at.error, [e.value for e in at.error]
    payload = json.loads((diffing_run / "diffing.json").read_text())
    table = next(d.value for d in at.dataframe if "recovered" in d.value.columns)
    assert list(table.method) == [c["method"] for c in payload["cells"]]
    assert at.selectbox(key="diffing_organism").value == DIFFING_ORGANISM
    adl = diffing_run / DIFFING_ORGANISM / "adl"
    lens = json.loads((adl / "logit_lens.json").read_text())
    shown = next(d.value for d in at.dataframe if "top tokens" in d.value.columns)
    at_zero = sorted(
        (r for r in lens if r["position"] == 0 and r["sign"] == "+"), key=lambda r: r["layer"]
    )
    assert list(shown.layer) == [r["layer"] for r in at_zero]
    assert shown["top tokens"][0].split("  ")[0] == visible_whitespace(at_zero[0]["tokens"][0])
    steering = json.loads((adl / "steering.json").read_text())
    first = steering[0]["completions"]
    assert [t.value for t in at.text][: len(first)] == first
    at.session_state["diffing_section"] = "Difference SAE"
    at.run()
    assert at.query_params["section"] == "Difference SAE"
    sae = json.loads((diffing_run / DIFFING_ORGANISM / "diff-sae" / "top_latents.json").read_text())
    sae_table = next(d.value for d in at.dataframe if "logit tokens" in d.value.columns)
    assert list(sae_table.latent) == [r["latent"] for r in sae]
    at.session_state["diffing_section"] = "Change profile"
    at.run()
    profile = json.loads(
        (diffing_run / DIFFING_ORGANISM / "change_profile" / "profile.json").read_text()
    )
    profile_table = next(d.value for d in at.dataframe if "rms_ratio" in d.value.columns)
    expected = [r for r in profile["pass"]["rows"] if r["n_tokens"]]
    assert list(profile_table.relative_norm) == pytest.approx(
        [r["relative_norm"] for r in expected]
    )


def test_known_answers_page_without_results_says_what_writes_them(tmp_path):
    run = build_run_folder(tmp_path / "run", n_latents=16, n_example_latents=2,
                           with_tuco=False, with_steering=False)  # fmt: skip
    at = open_page(run, "diffing")
    text = "\n".join(i.value for i in at.info)
    assert "interp evaluate-diffing" in text and "interp adl" in text


# --- Home and TuCo: headline numbers with their caveats -----------------------------------------


def test_home_leads_with_the_typical_token_fve_and_the_massive_token_count(tmp_path):
    run = build_run_folder(tmp_path / "run", n_latents=16, n_example_latents=2,
                           with_tuco=False, with_steering=False)  # fmt: skip
    reconstruction = {
        "n_tokens": 100,
        "fve": {"base": -9.5, "chat": -9.25},
        "fve_typical": {"base": 0.75, "chat": 0.5},
        "n_massive_tokens": 1,
        "massive_ratio": 5.0,
        "massive_error_share": {"base": 0.99, "chat": 0.98},
        "l0": 40.0,
        "dead_fraction": 0.25,
    }
    eval_path = run / "dictionaries" / "crosscoder" / "eval.json"
    eval_path.write_text(json.dumps({"reconstruction": reconstruction}))
    at = open_page(run)
    headline = next(d.value for d in at.dataframe if "massive-norm tokens" in d.value.columns)
    assert list(headline.columns) == [
        "dictionary",
        "FVE typical (base)",
        "FVE typical (chat)",
        "massive-norm tokens",
        "FVE all tokens (base)",
        "FVE all tokens (chat)",
        "L0",
        "dead fraction",
    ]
    assert headline.iloc[0].tolist() == [
        "crosscoder",
        0.75,
        0.5,
        "1 of 100",
        -9.5,
        -9.25,
        40.0,
        0.25,
    ]


def test_tuco_auc_states_its_direction_and_n(tmp_path):
    run = build_run_folder(tmp_path / "run", n_latents=16, n_example_latents=2,
                           with_steering=False)  # fmt: skip
    summary = json.loads((run / "tuco" / "summary.json").read_text())
    summary["auc_plain_vs_jailbreak"] = 0.0
    (run / "tuco" / "summary.json").write_text(json.dumps(summary))
    at = open_page(run, "tuco")
    caption = next(c.value for c in at.caption if "AUC plain vs jailbreak" in c.value)
    n = summary["n_prompts"]
    assert f"n = {n['harmful']} plain harmful and {n['jailbreak']} jailbreak prompts" in caption
    assert "P(TuCo plain harmful > TuCo jailbreak) = 0.000" in caption
    assert "higher TuCo than plain ones" in caption
