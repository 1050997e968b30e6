"""End to end in a real browser: `interp app` serves a small run folder, headless Debian chromium
(driven by Playwright, never Playwright's own browser download) opens a latent page, finds the
highlighted tokens of its examples, saves a screenshot as an artifact; then selects the first row of
the Latents table and clicks a point of its scatter, each landing on that latent's page.

Needs `/usr/bin/chromium`: `apt-get update && apt-get install -y chromium chromium-driver`.
The screenshot goes to `$INTERP_ARTIFACTS_DIR` (default: <repo>/artifacts/).
"""

import os
from pathlib import Path

import pandas as pd
import pytest
from app_fixtures import build_run_folder

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
        page.wait_for_url(f"**/latent?latent={top}")
        page.goto(f"{url}/latents")
        wait_rendered(page)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 3")
        # a click on a point of the Latent Scaling scatter opens that latent
        scatter = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").nth(2)
        scatter.scroll_into_view_if_needed()
        point = scatter.evaluate(POINT_ON_SCREEN)
        page.mouse.click(point["x"], point["y"])
        page.wait_for_url(f"**/latent?latent={point['latent']}")
        wait_rendered(page)
        assert page.locator("h1").first.inner_text().startswith(f"Latent {point['latent']} ")
    assert (ARTIFACTS / "latent_page.png").stat().st_size > 10_000
