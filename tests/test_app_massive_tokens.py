"""The home page shows a dictionary's FVE over typical tokens next to its FVE over all tokens
when `interp dict eval` found massive-norm tokens (eval.json as the CLI writes it)."""

import json
import shutil
from pathlib import Path

import pytest
from app_fixtures import build_run_folder, open_page

RECONSTRUCTION = {
    "n_tokens": 566,
    "fve": {"base": -7.97, "chat": -8.94},
    "fve_typical": {"base": 0.891, "chat": 0.874},
    "n_massive_tokens": 2,
    "massive_fraction": 2 / 566,
    "massive_error_share": {"base": 0.97, "chat": 0.98},
    "massive_ratio": 5.0,
    "l0": 28.1,
    "dead_fraction": 0.28,
    "dense_fraction": 0.03,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = build_run_folder(
        tmp_path_factory.mktemp("app-massive") / "run", n_latents=256, n_example_latents=8
    )
    (run / "dictionaries" / "crosscoder" / "eval.json").write_text(
        json.dumps({"reconstruction": RECONSTRUCTION})
    )
    return run


def test_home_shows_typical_token_fve_beside_all_token_fve(run):
    at = open_page(run)
    captions = [c.value for c in at.caption]
    assert (
        "`crosscoder`: FVE base -7.970, chat -8.940 over all 566 held-out tokens; base 0.891, "
        "chat 0.874 over the 564 typical ones. 2 massive-norm tokens (norm > 5x the median): "
        "base 97%, chat 98% of the squared error."
    ) in captions
    table = next(d.value for d in at.dataframe if "reconstruction.fve.base" in d.value.columns)
    columns = list(table.columns)
    fve = columns.index("reconstruction.fve.base")
    assert columns[fve : fve + 4] == [
        "reconstruction.fve.base",
        "reconstruction.fve.chat",
        "reconstruction.fve_typical.base",
        "reconstruction.fve_typical.chat",
    ]
    assert table.loc[0, "reconstruction.n_massive_tokens"] == 2


def test_home_has_no_massive_token_note_without_massive_tokens(run, tmp_path):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    evaluation = {"reconstruction": RECONSTRUCTION | {"n_massive_tokens": 0}}
    (copy / "dictionaries" / "crosscoder" / "eval.json").write_text(json.dumps(evaluation))
    captions = [c.value for c in open_page(copy).caption]
    assert not any("massive-norm" in caption for caption in captions)
