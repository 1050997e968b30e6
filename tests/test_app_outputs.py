"""The "Weights and outputs" page on a run folder that the real commands wrote from a tiny pair:
AppTest (sections, metrics, missing folders) and, marked `browser`, headless Debian Chromium
(charts drawn, the amplified generation shown, a screenshot artifact)."""

import json
import os
import shutil
from pathlib import Path

import pytest
from app_fixtures import open_page
from tiny_models import tiny_pair

from app.screenshots import CHROMIUM, chromium, screenshot_whole_page, serve, wait_rendered
from crosscoders.diffing.amplify import AmplifyConfig, run_amplify
from crosscoders.diffing.horizon import HorizonConfig, run_horizon
from crosscoders.diffing.weights import WeightsConfig, run_weights

ARTIFACTS = Path(
    os.environ.get("INTERP_ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "artifacts")
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outputs-run")
    pair = tiny_pair("gemma3")
    run_weights(root / "weights", pair.base.model, chat=pair.chat.model, config=WeightsConfig(3))
    run_horizon(pair, ["w1 w2", "w3 w4 w5"], root / "horizon", HorizonConfig(max_new_tokens=5))
    run_amplify(pair, root / "amplification", AmplifyConfig([3.0], 2, 5))
    return root


def test_page_shows_every_section(run):
    at = open_page(run, "outputs")
    assert at.title[0].value == "Weights and outputs"
    summary = json.loads((run / "weights" / "summary.json").read_text())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["changed matrices"] == str(summary["n_changed"])
    assert str(summary["intruders"]) in metrics.values()
    assert not at.warning
    generations = json.loads((run / "amplification" / "generations.json").read_text())
    shown = [t.value for t in at.text]
    assert generations[-1]["completions"][0] in shown  # alpha 3 (the last) by default
    assert generations[1]["completions"][0] in shown  # chat, alpha 1


def test_missing_sections_are_named_and_the_rest_renders(run, tmp_path):
    partial = Path(shutil.copytree(run, tmp_path / "run"))
    shutil.rmtree(partial / "horizon")
    (partial / "amplification" / "generations.json").unlink()
    at = open_page(partial, "outputs")
    warnings = " ".join(w.value for w in at.warning)
    assert "horizon/summary.json" in warnings and "interp horizon" in warnings
    assert "amplification/generations.json" in warnings and "interp amplify" in warnings
    assert at.metric  # the weights section still renders


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium chromium-driver",
)
def test_page_in_chromium_draws_the_charts(run):
    generations = json.loads((run / "amplification" / "generations.json").read_text())
    with serve(run) as url, chromium() as page:
        page.goto(f"{url}/outputs")
        wait_rendered(page)
        assert page.locator("h1").first.inner_text().startswith("Weights and outputs")
        # heatmap + per-layer lines, branching bars + entropy curves
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 4")
        heatmap = page.locator(".js-plotly-plot").first.evaluate("gd => gd.data[0].type")
        assert heatmap == "heatmap"
        body = page.locator("[data-testid='stMain']").inner_text()
        assert generations[-1]["completions"][0].strip().split()[0] in body
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot_whole_page(page, ARTIFACTS / "outputs_page.png")
    assert (ARTIFACTS / "outputs_page.png").stat().st_size > 10_000
