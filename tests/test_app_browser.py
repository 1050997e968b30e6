"""End to end in a real browser: `interp app` serves a small run folder, headless Debian chromium
(driven by Playwright, never Playwright's own browser download) opens a latent page, finds the
highlighted tokens of its examples, and saves a screenshot as an artifact.

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
ARTIFACTS = Path(
    os.environ.get("INTERP_ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "artifacts")
)


def test_latent_page_in_chromium_highlights_tokens(tmp_path):
    run = build_run_folder(tmp_path / "run", n_latents=2048, n_example_latents=16)
    latent = 3
    examples = pd.read_parquet(run / "analysis" / "crosscoder" / "examples.parquet")
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
        page.goto(f"{url}/latents")
        wait_rendered(page)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 3")
    assert (ARTIFACTS / "latent_page.png").stat().st_size > 10_000
