"""End to end in a real browser: `interp app` serves a small run folder, headless Debian chromium
(driven by Playwright, never Playwright's own browser download) opens a latent page, finds the
highlighted tokens of its examples, saves a screenshot as an artifact; then selects the first row of
the Latents table and clicks a point of its scatter, each landing on that latent's page. A shared
URL opens the same dictionary, filters and latent in a fresh browser; on tiny models with a real
crosscoder, the Search page's latents equal the exploring API's encoding and the Latent page's
"Steer" button produces the API's base and chat generations.

Needs `/usr/bin/chromium`: `apt-get update && apt-get install -y chromium chromium-driver`.
The screenshot goes to `$INTERP_ARTIFACTS_DIR` (default: <repo>/artifacts/).
"""

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from app_fixtures import build_run_folder
from test_app_live import live_run  # noqa: F401  (module fixture: tiny models + real crosscoder)

from app.screenshots import CHROMIUM, chromium, screenshot_whole_page, serve, wait_rendered

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium "
        "chromium-driver",
    ),
]
POINT_ON_SCREEN = """gd => {
    const trace = gd._fullData[0], layout = gd._fullLayout, box = gd.getBoundingClientRect();
    return {latent: trace.customdata[0],
            x: box.left + layout._size.l + layout.xaxis.l2p(trace.x[0]),
            y: box.top + layout._size.t + layout.yaxis.l2p(trace.y[0])};
}"""  # where plotly drew the first point of the first trace, in page pixels
GRID_HEADER_PX, GRID_ROW_PX = 35, 35  # st.dataframe's header and row heights
ARTIFACTS = Path(
    os.environ.get("INTERP_ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "artifacts")
)


def test_latent_page_in_chromium_highlights_tokens(tmp_path):
    run = build_run_folder(tmp_path / "run", n_latents=2048, n_example_latents=16)
    latent = 3
    examples = pd.read_parquet(run / "analysis" / "crosscoder" / "examples.parquet")
    latents = pd.read_parquet(run / "analysis" / "crosscoder" / "latents.parquet")
    mine = examples[examples.latent == latent]
    firing_in_top = sum(int((pd.Series(a) != 0).sum()) for a in mine[mine.kind == "top"].acts)
    with serve(run) as url, chromium() as page:
        page.goto(f"{url}/latent?latent={latent}")
        wait_rendered(page)
        assert page.locator("h1").first.inner_text().startswith(f"Latent {latent}")
        highlighted = page.locator("span.tok-on")
        # the visible tab shows the top examples: latent line + base and chat shares per example
        assert highlighted.count() >= firing_in_top > 0
        peak_style = highlighted.first.get_attribute("style")
        assert "background-color: rgba(255, 128, 0" in peak_style or "rgba(255,128,0" in peak_style
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot_whole_page(page, ARTIFACTS / "latent_page.png")
        # selecting the first table row (its row marker) opens that latent
        page.goto(f"{url}/latents")
        wait_rendered(page)
        table = page.locator("[data-testid='stDataFrame']").first.bounding_box()
        page.mouse.click(table["x"] + 18, table["y"] + GRID_HEADER_PX + GRID_ROW_PX / 2)
        top = latents.sort_values("rel_norm", ascending=False, kind="stable").latent.iloc[0]
        page.wait_for_url(re.compile(rf"/latent\?(.*&)?latent={top}(&|$)"))
        page.goto(f"{url}/latents")
        wait_rendered(page)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 4")
        # a click on a point of the Latent Scaling scatter (after the density, relative-norm and
        # cosine histograms) opens that latent
        scatter = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").nth(3)
        scatter.scroll_into_view_if_needed()
        point = scatter.evaluate(POINT_ON_SCREEN)
        page.mouse.click(point["x"], point["y"])
        page.wait_for_url(re.compile(rf"/latent\?(.*&)?latent={point['latent']}(&|$)"))
        wait_rendered(page)
        assert page.locator("h1").first.inner_text().startswith(f"Latent {point['latent']} ")
    assert (ARTIFACTS / "latent_page.png").stat().st_size > 10_000


def shown_line(page) -> str:
    return page.get_by_text(re.compile(r"latents of \S+ shown")).first.inner_text()


def test_a_shared_url_opens_the_same_dictionary_filters_and_latent(tmp_path):
    run = build_run_folder(tmp_path / "run", n_latents=256, n_example_latents=8,
                           with_tuco=False, with_steering=False)  # fmt: skip
    build_run_folder(run, n_latents=256, n_example_latents=8, dict_name="second", seed=1,
                     with_tuco=False, with_steering=False)  # fmt: skip
    second = pd.read_parquet(run / "analysis" / "second" / "latents.parquet")
    kept = second[second.latent_class.isin(["chat-only", "shared"]) & (second.rel_norm >= 0.3)]
    with serve(run) as url, chromium() as page:
        page.goto(f"{url}/latents?dictionary=second&classes=chat-only,shared&rel_norm=0.3,1")
        wait_rendered(page)
        assert shown_line(page).startswith(f"{len(kept)} of 256 latents of second shown")
        shared_latents = page.url  # what a user copies: the app wrote run, dictionary, filters
        query = parse_qs(urlparse(shared_latents).query)
        assert query["run"] == [str(run)] and query["dictionary"] == ["second"]
        assert query["classes"] == ["chat-only,shared"] and query["rel_norm"] == ["0.3,1"]
        table = page.locator("[data-testid='stDataFrame']").first.bounding_box()
        page.mouse.click(table["x"] + 18, table["y"] + GRID_HEADER_PX + GRID_ROW_PX / 2)
        top = int(kept.sort_values("rel_norm", ascending=False, kind="stable").latent.iloc[0])
        page.wait_for_url(re.compile(rf"/latent\?(.*&)?latent={top}(&|$)"))
        wait_rendered(page)
        shared_latent = page.url
        assert parse_qs(urlparse(shared_latent).query)["dictionary"] == ["second"]
        fresh = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
        for link, check in ((shared_latents, "latents"), (shared_latent, "latent")):
            fresh.goto(link)
            wait_rendered(fresh)
            chosen = fresh.locator("[data-testid='stSidebar'] input[aria-label='Dictionary']")
            assert chosen.input_value() == "second"
            if check == "latents":
                assert shown_line(fresh).startswith(f"{len(kept)} of 256 latents of second")
            else:
                assert fresh.locator("h1").first.inner_text().startswith(f"Latent {top} ")
                relative = f"{second.set_index('latent').rel_norm[top]:.3f}"
                assert relative in fresh.locator("[data-testid='stMetric']").first.inner_text()
        fresh.close()


def test_search_page_in_chromium_equals_the_api_encoding(live_run):  # noqa: F811
    from steering.explore import open_run

    text = "w1 w5 w9 user w12 w3 w7"
    explorer = open_run(live_run, "crosscoder")
    encoded = explorer.encode(text)
    expected = [
        (position, latent)
        for position in range(len(encoded.tokens))
        if not bool(encoded.special[position])
        for latent in list(encoded.active(position))[:5]
    ]
    with serve(live_run) as url, chromium() as page:
        page.goto(f"{url}/search?text={text.replace(' ', '+')}")
        wait_rendered(page)
        page.wait_for_selector("a.search-latent")
        links = page.locator("a.search-latent")
        shown = links.evaluate_all(
            "links => links.map(a => [Number(a.dataset.position), Number(a.dataset.latent)])"
        )
        assert [tuple(pair) for pair in shown] == expected and expected
        first = links.first
        latent = int(first.get_attribute("data-latent"))
        first.click()  # click through to the latent
        page.wait_for_url(re.compile(rf"/latent\?(.*&)?latent={latent}(&|$)"))
        wait_rendered(page)
        assert page.locator("h1").first.inner_text().startswith(f"Latent {latent} ")


def test_steering_from_a_latent_in_chromium_gives_base_and_chat_generations(live_run):  # noqa: F811
    from steering.explore import open_run

    latent, prompt = 3, "w1 w2 w3"
    with serve(live_run) as url, chromium() as page:
        page.goto(f"{url}/latent?latent={latent}")
        wait_rendered(page)
        box = page.get_by_label("Prompt")
        box.fill(prompt)
        box.press("Control+Enter")
        value = float(page.get_by_label(re.compile("^Value")).input_value())
        tokens = int(page.get_by_label("New tokens").input_value())
        page.get_by_role("button", name="Steer").click()
        page.get_by_text("chat, unsteered").wait_for(timeout=120_000)
        wait_rendered(page)
        generations = page.locator("[data-testid='stText']").all_inner_texts()
    explorer = open_run(live_run, "crosscoder")
    expected = [
        explorer.steer(latent, prompt, strength, value, model, "add", tokens)
        for model in ("base", "chat")
        for strength in (1.0, 0.0)
    ]
    assert [g.strip() for g in generations[-4:]] == [e.strip() for e in expected]
