"""The app on a run folder written by the real pipeline (tiny pair, real activation cache, a
crosscoder with planted chat-only and base-only latents, `analyze`): the fixture of
test_diffing_run.py. Guards against drift between the analysis writer and the app's reader."""

import json

import pandas as pd
from app_fixtures import open_page
from test_diffing_run import DICT_SIZE, N_CHAT_ONLY, run_dir  # noqa: F401  (module fixture)

from app.render import display_token


def test_home_latents_and_compare_render_the_real_analysis(run_dir):  # noqa: F811
    home = open_page(run_dir, timeout=120)
    assert not home.error
    metrics = {m.label: m.value for m in home.metric}
    assert metrics["latents"] == str(DICT_SIZE)
    assert int(metrics["chat-only"]) >= N_CHAT_ONLY
    latents = open_page(run_dir, "latents", timeout=120)
    assert not latents.error and len(latents.dataframe[0].value) == DICT_SIZE
    compare = open_page(run_dir, "compare", timeout=120)
    shift = pd.read_parquet(run_dir / "analysis" / "tiny" / "token_shift.parquet")
    table = next(d.value for d in compare.dataframe if "rank_under_base" in d.value.columns)
    first = shift[shift.prompt_id == shift.prompt_id.min()]
    assert list(table.token) == list(first.sort_values("position").token)


def test_latent_page_boxes_the_example_token_of_a_real_example(run_dir):  # noqa: F811
    examples = pd.read_parquet(run_dir / "analysis" / "tiny" / "examples.parquet")
    latent = int(examples.latent.iloc[0])
    at = open_page(run_dir, "latent", timeout=120, latent=str(latent))
    assert not at.error, [e.value for e in at.error]
    html = next(m.value for m in at.markdown if 'class="tok' in m.value)
    top = examples[(examples.latent == latent) & (examples.kind == "top")]
    # one boxed token per line (latent, base input, chat input) of every top example
    assert html.count("outline: 2px solid") == 3 * len(top)
    tokens = json.loads((run_dir / "analysis" / "tiny" / "tokens.json").read_text())
    first = top.sort_values("rank").iloc[0]
    peak_token = tokens["token_strings"][str(first.token_ids[first.max_index])]
    shown = display_token(peak_token)  # whitespace made visible, HTML escaped
    assert f'outline: 2px solid #000">{shown}</span>' in html


def test_pages_of_steps_the_run_lacks_name_the_missing_file(run_dir):  # noqa: F811
    assert "tuco/scores.json is missing" in open_page(run_dir, "tuco", timeout=120).error[0].value
    assert (
        "steering/results.parquet is missing"
        in open_page(run_dir, "steering", timeout=120).error[0].value
    )
