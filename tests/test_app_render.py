"""The app's pure helpers (token highlighting, selection events, the latent filter, histograms,
the per-latent example index) and the `interp app` command line, checked by hand."""

import re

import numpy as np
import pandas as pd
import pytest
from app_fixtures import build_run_folder
from typer.testing import CliRunner

from app.latent_filters import LatentFilter
from app.render import bar_histogram, latent_from_selection, token_html
from app.run_folder import RunFolder
from interp import app_launch
from interp.cli.main import app as cli
from interp.errors import InterpError


def test_token_html_shades_by_value_over_scale_and_escapes():
    html = token_html(["<b>", " a", "\n", " c"], [0.0, 2.0, 8.0, -4.0], scale=4.0)
    spans = re.findall(
        r'<span class="([^"]+)" title="([^"]+)" style="([^"]+)">([^<]*)</span>', html
    )
    assert [s[0] for s in spans] == ["tok", "tok tok-on", "tok tok-on", "tok tok-on"]
    assert [s[1] for s in spans] == ["0", "2", "8", "-4"]
    # opacity = |value| / scale, clipped at 1; negative values in blue
    assert "rgba(255,128,0,0.00)" in spans[0][2] and "rgba(255,128,0,0.50)" in spans[1][2]
    assert "rgba(255,128,0,1.00)" in spans[2][2] and "rgba(30,110,255,1.00)" in spans[3][2]
    assert [s[3] for s in spans] == ["&lt;b&gt;", "·a", "↵", "·c"]  # whitespace made visible


def test_token_html_outlines_marked_tokens_and_rejects_misaligned_values():
    html = token_html(
        ["a", "b"], [1.0, 0.0], 1.0, outlined=[False, True], outline_colors=["#111", "#d62728"]
    )
    assert html.count("outline: 2px solid #d62728") == 1 and "#111" not in html
    with pytest.raises(AssertionError, match="2 tokens but 1 values"):
        token_html(["a", "b"], [1.0], 1.0)


@pytest.mark.parametrize(
    ("event", "latent"),
    [
        ({"selection": {"points": [{"customdata": [17], "x": 0.1}]}}, 17),
        ({"selection": {"points": [{"customdata": 5}]}}, 5),
        ({"selection": {"points": [{"x": 0.1}, {"customdata": [9]}]}}, 9),
        ({"selection": {"points": []}}, None),
        (None, None),
    ],
)
def test_latent_from_selection(event, latent):
    assert latent_from_selection(event) == latent


def test_latent_filter_matches_a_hand_selection():
    table = pd.DataFrame(
        {
            "latent": [0, 1, 2, 3, 4],
            "latent_class": ["chat-only", "shared", "chat-only", "base-only", "chat-only"],
            "rel_norm": [0.95, 0.5, 0.9, 0.05, 1.0],
            "cosine": [0.2, 0.9, -0.5, 0.1, 0.7],
            "freq": [1e-2, 1e-3, 1e-2, 1e-1, 1e-4],
            "chat_specific": [True, False, True, False, False],
        }
    )
    kept = LatentFilter(("chat-only",), (0.9, 1.0), (-0.6, 0.8), 1e-3, False, "cosine").apply(table)
    assert list(kept.latent) == [0, 2]  # 4 fails min_freq; bounds are inclusive (0.9)
    kept = LatentFilter(
        ("chat-only", "shared"), chat_specific_only=True, sort_by="latent", descending=False
    ).apply(table)
    assert list(kept.latent) == [0, 2]


def test_bar_histogram_density_integrates_to_one():
    edges, counts = [0.0, 1.0, 3.0, 4.0], [10, 20, 10]
    figure = bar_histogram(edges, counts, "t", density=True, log_y=False)
    heights, widths = np.asarray(figure.data[0].y), np.diff(edges)
    assert heights == pytest.approx([0.25, 0.25, 0.25])
    assert float((heights * widths).sum()) == pytest.approx(1.0)
    raw = bar_histogram(edges, counts, "t", density=False, log_y=True)
    assert list(raw.data[0].y) == counts and raw.layout.yaxis.type == "log"


def test_examples_of_a_latent_are_exactly_its_rows(tmp_path):
    run = build_run_folder(
        tmp_path / "run", n_latents=32, n_example_latents=8, with_tuco=False, with_steering=False
    )
    stored = pd.read_parquet(run / "analysis" / "crosscoder" / "examples.parquet")
    shuffled = stored.sample(frac=1.0, random_state=0)  # the index must not rely on row order
    shuffled.to_parquet(run / "analysis" / "crosscoder" / "examples.parquet")
    folder = RunFolder(run)
    for latent in (0, 5, 7):
        got = folder.examples("crosscoder", latent).sort_values(["kind", "rank"])
        want = stored[stored.latent == latent].sort_values(["kind", "rank"])
        assert list(got.activation) == pytest.approx(list(want.activation))
        assert [list(t) for t in got.token_ids] == [list(t) for t in want.token_ids]
    assert folder.examples("crosscoder", 20).empty


def test_streamlit_command_is_headless_and_local_by_default(monkeypatch, tmp_path):
    captured = {}

    def fake_execve(path, argv, env):
        captured.update(path=path, argv=argv, env=env)

    monkeypatch.setattr(app_launch.os, "execve", fake_execve)
    result = CliRunner().invoke(cli, ["app", str(tmp_path), "--port", "8765"])
    assert result.exit_code == 0, result.output
    argv = captured["argv"]
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert argv[argv.index("--server.headless") + 1] == "true"
    assert argv[argv.index("run") + 1].endswith("app/main.py")
    assert captured["env"][app_launch.RUN_FOLDER_ENV] == str(tmp_path.resolve())


def test_app_command_rejects_a_missing_run_folder(tmp_path):
    result = CliRunner().invoke(cli, ["app", str(tmp_path / "nope")])
    assert isinstance(result.exception, InterpError)
    assert "does not exist" in str(result.exception)
