"""Streamlit AppTest tests of every page of the app on a synthetic 16k-latent run folder: each page
loads, its widgets change what it shows (checked against the run folder's files), and a missing
piece gives a message naming the file and the step that writes it."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from app_fixtures import build_run_folder, open_page
from streamlit.testing.v1 import AppTest

from app.render import visible_whitespace

N_LATENTS = 16384
N_EXAMPLE_LATENTS = 64


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return build_run_folder(
        tmp_path_factory.mktemp("app") / "run",
        n_latents=N_LATENTS,
        n_example_latents=N_EXAMPLE_LATENTS,
    )


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    """A private copy that a test may break."""
    return Path(shutil.copytree(run, tmp_path / "run"))


def all_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += (
        [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]
    )
    return "\n".join(parts)


# --- Home ---------------------------------------------------------------------------------------


def test_home_shows_models_layer_data_and_dictionary_metrics(run):
    at = open_page(run)
    assert not at.error
    text = all_text(at)
    assert "`gemma-3-270m`" in text and "`gemma-3-270m-chat`" in text and "`6`" in text
    assert "3 shards, 3,000,000 tokens" in text
    dictionaries = next(d.value for d in at.dataframe if "dictionary" in d.value.columns)
    assert dictionaries.loc[0, "dictionary"] == "crosscoder"
    assert dictionaries.loc[0, "fve.chat"] == pytest.approx(0.88)
    assert bool(dictionaries.loc[0, "analysed"])


@pytest.mark.parametrize(
    ("folder", "message"),
    [("", "no run folder given"), ("/nonexistent/run", "does not exist")],
)
def test_home_explains_a_missing_run_folder(folder, message):
    at = open_page(folder)
    assert message in at.error[0].value


def test_home_shows_class_counts_and_causal_table(run):
    at = open_page(run)
    counts = latents_of(run).latent_class.value_counts()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["latents"] == f"{N_LATENTS:,}"
    assert all(metrics[name] == f"{count:,}" for name, count in counts.items())
    causal = next(d.value for d in at.dataframe if "kl_first_10" in d.value.columns)
    assert list(causal.latents) == ["chat-only", "random"]


def test_home_without_run_json_assembles_the_summary_from_the_steps(run_copy):
    (run_copy / "run.json").unlink()
    at = open_page(run_copy)
    assert not at.error
    assert "run.json is missing" in at.warning[0].value
    text = all_text(at)
    assert "`gemma-3-270m`" in text and "`gemma-3-270m-chat`" in text and "`6`" in text


def test_home_explains_an_incomplete_run_folder(tmp_path):
    at = open_page(tmp_path)
    assert "run.json is missing" in at.error[0].value


# --- Latents ------------------------------------------------------------------------------------


def latents_of(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "analysis" / "crosscoder" / "latents.parquet")


def shown_count(at: AppTest) -> int:
    line = next(m.value for m in at.markdown if " latents of " in m.value)
    return int(re.match(r"\*\*([\d,]+)\*\*", line).group(1).replace(",", ""))


def test_latents_page_lists_every_latent(run):
    at = open_page(run, "latents")
    assert shown_count(at) == N_LATENTS
    assert len(at.dataframe[0].value) == N_LATENTS
    assert len(at.get("plotly_chart")) == 4  # density, relative norm, cosine, nu scatter


def test_latents_filters_match_a_hand_count(run):
    at = open_page(run, "latents")
    at.multiselect(key="latents_classes").set_value(["chat-only", "shared"])
    at.slider(key="latents_rel_norm").set_value((0.45, 0.95))
    at.slider(key="latents_cosine").set_value((0.5, 1.0))
    at.number_input(key="latents_min_freq").set_value(1e-3)
    at.run()
    table = latents_of(run)
    expected = table[
        table.latent_class.isin(["chat-only", "shared"])
        & (table.rel_norm >= 0.45)
        & (table.rel_norm <= 0.95)
        & (table.cosine >= 0.5)
        & (table.freq >= 1e-3)
    ]
    assert 0 < len(expected) < N_LATENTS
    assert shown_count(at) == len(expected)
    assert set(at.dataframe[0].value.latent) == set(expected.latent)


def test_latents_chat_specific_filter_and_sort(run):
    at = open_page(run, "latents")
    at.checkbox(key="latents_chat_specific").check()
    at.selectbox(key="latents_sort").set_value("nu_eps")
    at.toggle(key="latents_descending").set_value(False)
    at.run()
    table = latents_of(run)
    expected = table[table.chat_specific].sort_values("nu_eps")
    shown = at.dataframe[0].value
    assert list(shown.latent) == list(expected.latent)


def test_latents_open_button_opens_the_latent_page(run):
    at = open_page(run, "latents")
    at.number_input(key="latents_open_id").set_value(42)
    at.button(key="latents_open_button").click().run()
    assert at.title[0].value.startswith("Latent 42 ")
    assert at.query_params["latent"] == "42"


def test_latents_missing_table_message(run_copy):
    (run_copy / "analysis" / "crosscoder" / "latents.parquet").unlink()
    at = open_page(run_copy, "latents")
    assert "latents.parquet is missing" in at.error[0].value
    assert "interp analyze" in at.error[0].value


def test_latents_table_without_a_contract_column_is_named(run_copy):
    path = run_copy / "analysis" / "crosscoder" / "latents.parquet"
    pd.read_parquet(path).drop(columns=["nu_eps"]).to_parquet(path)
    at = open_page(run_copy, "latents")
    assert "lacks the columns ['nu_eps']" in at.error[0].value


# --- Latent -------------------------------------------------------------------------------------


def spans(html: str) -> list[tuple[str, float]]:
    """(class, opacity) of every token span of a token_html block."""
    return [
        (cls, float(alpha))
        for cls, alpha in re.findall(
            r'<span class="([^"]+)"[^>]*rgba\(\d+,\d+,\d+,([\d.]+)\)', html
        )
    ]


def test_latent_page_highlights_the_stored_examples(run):
    latent = 5
    at = open_page(run, "latent", latent=str(latent))
    assert at.title[0].value.startswith(f"Latent {latent} ")
    examples = pd.read_parquet(run / "analysis" / "crosscoder" / "examples.parquet")
    mine = examples[examples.latent == latent]
    top_html = next(m.value for m in at.markdown if 'class="tok' in m.value)
    top = mine[mine.kind == "top"]
    # three lines per example (latent, base share, chat share), one span per token
    assert len(spans(top_html)) == 3 * sum(len(t) for t in top.token_ids)
    # the peak token of the first example is as opaque as activation / max activation
    table = latents_of(run).set_index("latent")
    scale = max(float(mine.activation.max()), float(table.loc[latent, "max_act"]))
    first = top.sort_values("rank").iloc[0]
    latent_line = spans(top_html)[: len(first.token_ids)]
    assert latent_line[first.max_index][1] == pytest.approx(first.activation / scale, abs=0.006)
    assert latent_line[first.max_index][0] == "tok tok-on"
    quantile_html = [m.value for m in at.markdown if 'class="tok' in m.value][1]
    assert "q0.25 #0" in quantile_html and "q0.75 #2" in quantile_html


def test_latent_page_shows_logits_neighbors_histogram_and_scaling(run):
    latent = 7
    at = open_page(run, "latent", latent=str(latent))
    analysis = run / "analysis" / "crosscoder"
    logits = pd.read_parquet(analysis / "decoder_logits.parquet")
    chat_row = logits[(logits.latent == latent) & (logits.model == "chat")].iloc[0]
    tables = [d.value for d in at.dataframe]
    logit_tables = [t for t in tables if "top token" in t.columns]
    assert len(logit_tables) == 2
    # shown with visible whitespace (a leading space as "·")
    assert list(logit_tables[1]["top token"]) == [
        visible_whitespace(t) for t in chat_row.top_tokens
    ]
    neighbors = next(t for t in tables if "neighbor" in t.columns)
    stored = pd.read_parquet(analysis / "neighbors.parquet")
    stored = stored[stored.latent == latent].sort_values("cosine", ascending=False)
    assert list(neighbors.neighbor) == list(stored.neighbor)
    scaling = next(t for t in tables if "value" in t.columns)
    nu_r = latents_of(run).set_index("latent").loc[latent, "nu_r"]
    assert float(scaling.loc["nu_r", "value"]) == pytest.approx(nu_r, rel=1e-3)
    assert len(at.get("plotly_chart")) == 1


def test_latent_page_opens_on_the_most_chat_leaning_latent_with_examples(run):
    at = open_page(run, "latent")
    table = latents_of(run)
    expected = table[table.latent < N_EXAMPLE_LATENTS].sort_values("rel_norm").latent.iloc[-1]
    assert at.title[0].value.startswith(f"Latent {expected} ")
    assert any('class="tok' in m.value for m in at.markdown)


def test_latent_number_input_switches_latent_and_url(run):
    at = open_page(run, "latent", latent="3")
    at.number_input(key="latent_id").set_value(11).run()
    assert at.title[0].value.startswith("Latent 11 ")
    assert at.query_params["latent"] == "11"


def test_latent_toggles_change_the_views(run):
    at = open_page(run, "latent", latent="3")
    at.toggle(key="latent_per_model").set_value(False)
    at.toggle(key="latent_density").set_value(True)
    at.run()
    top_html = next(m.value for m in at.markdown if 'class="tok' in m.value)
    examples = pd.read_parquet(run / "analysis" / "crosscoder" / "examples.parquet")
    top = examples[(examples.latent == 3) & (examples.kind == "top")]
    assert len(spans(top_html)) == sum(len(t) for t in top.token_ids)


def test_latent_without_stored_examples_says_so(run):
    at = open_page(run, "latent", latent=str(N_EXAMPLE_LATENTS + 100))
    assert any("stored no examples" in i.value for i in at.info)


def test_latent_missing_pieces_are_named_and_the_rest_renders(run_copy):
    analysis = run_copy / "analysis" / "crosscoder"
    (analysis / "neighbors.parquet").unlink()
    (analysis / "examples.parquet").unlink()
    at = open_page(run_copy, "latent", latent="2")
    warnings = "\n".join(w.value for w in at.warning)
    assert "neighbors.parquet is missing" in warnings and "examples.parquet is missing" in warnings
    assert any("top token" in d.value.columns for d in at.dataframe)


# --- TuCo ---------------------------------------------------------------------------------------


def test_tuco_page_per_token_view_and_alpha_generations(run):
    import json

    scores = json.loads((run / "tuco" / "scores.json").read_text())
    at = open_page(run, "tuco")
    assert len(at.get("plotly_chart")) == 3
    at.selectbox(key="tuco_prompt").set_value(4).run()
    html = next(m.value for m in at.markdown if 'class="tok' in m.value)
    assert len(spans(html)) == len(scores[4]["tokens"])
    alphas = json.loads((run / "tuco" / "alpha_refusals.json").read_text())
    at.selectbox(key="tuco_alpha_prompt").set_value(1).run()
    texts = [t.value for t in at.text]
    assert texts == [a["completions"][1]["completion"] for a in alphas]
    at.selectbox(key="tuco_metric").set_value("output_contribution").run()
    assert not at.exception


def test_tuco_missing_scores_message(run_copy):
    shutil.rmtree(run_copy / "tuco")
    at = open_page(run_copy, "tuco")
    assert "tuco/scores.json is missing" in at.error[0].value
    assert "interp tuco experiments" in at.error[0].value


# --- Steering -----------------------------------------------------------------------------------


def test_steering_page_shows_responses_with_and_without_the_map(run):
    at = open_page(run, "steering")
    assert len(at.get("plotly_chart")) == 2
    at.selectbox(key="steering_task").set_value("induce-refusal").run()
    at.selectbox(key="steering_method").set_value("mean-diff").run()
    at.select_slider(key="steering_strength").set_value(0.5)
    at.selectbox(key="steering_prompt").set_value(1)
    at.run()
    assert [t.value for t in at.text] == [
        "mean-diff at 0.0: response to 'Write an insult.'",
        "mean-diff at 0.5: response to 'Write an insult.'",
    ]
    maps = at.selectbox(key="steering_live_map").options
    assert maps == [
        f"{t}/{m}" for t in ("induce-refusal", "remove-refusal") for m in ("lineas", "mean-diff")
    ]


def test_steering_missing_results_message(run_copy):
    (run_copy / "steering" / "results.parquet").unlink()
    at = open_page(run_copy, "steering")
    assert "steering/results.parquet is missing" in at.error[0].value


# --- Compare ------------------------------------------------------------------------------------


def test_compare_page_shows_the_chosen_prompt(run):
    shift = pd.read_parquet(run / "analysis" / "crosscoder" / "token_shift.parquet")
    at = open_page(run, "compare")
    at.selectbox(key="compare_prompt").set_value(2).run()
    mine = shift[shift.prompt_id == 2].sort_values("position")
    table = next(d.value for d in at.dataframe if "rank_under_base" in d.value.columns)
    assert list(table.token) == list(mine.token)
    html = next(m.value for m in at.markdown if 'class="tok' in m.value)
    assert html.count("outline: 2px solid") == int((mine["shift"] != "unshifted").sum())


def test_compare_missing_token_shift_message(run_copy):
    (run_copy / "analysis" / "crosscoder" / "token_shift.parquet").unlink()
    at = open_page(run_copy, "compare")
    assert "token_shift.parquet is missing" in at.error[0].value


def test_sidebar_dictionary_choice_switches_the_analysis(run_copy):
    analysis = run_copy / "analysis"
    shutil.copytree(analysis / "crosscoder", analysis / "other")
    table = latents_of(run_copy)
    table[table.latent < 100].to_parquet(analysis / "other" / "latents.parquet")
    at = open_page(run_copy, "latents")
    assert shown_count(at) == N_LATENTS
    at.sidebar.selectbox(key="dictionary").set_value("other").run()
    assert shown_count(at) == 100
    assert "`other`" in next(m.value for m in at.markdown if " latents of " in m.value)


def test_compare_live_without_model_specs_says_so(run_copy):
    (run_copy / "run.json").write_text('{"name": "bare", "steps": {}}')
    (run_copy / "cache" / "manifest.json").unlink()
    (run_copy / "steering" / "config.json").unlink()
    at = open_page(run_copy, "compare")
    at.button(key="compare_live_button").click().run()
    assert "no base/chat model specs" in at.error[0].value
