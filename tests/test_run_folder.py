"""interp.run_folder: the one spelling of the run-folder layout, and the app's reader on it."""

from pathlib import Path

from app.run_folder import RunFolder as AppRunFolder
from interp.pipeline import plan, record_path
from interp.run_folder import RunFolder


def test_layout_paths_are_the_documented_folders(tmp_path):
    run = RunFolder(tmp_path)
    assert run.cache == tmp_path / "cache"
    assert run.dictionary("btk") == tmp_path / "dictionaries" / "btk"
    assert run.analysis("btk") == tmp_path / "analysis" / "btk"
    assert run.comparison == tmp_path / "analysis" / "comparison.md"
    assert run.run_record == tmp_path / "run.json"
    assert (run.diff_sae, run.adl, run.change_profile) == (
        tmp_path / "diff-sae",
        tmp_path / "adl",
        tmp_path / "change_profile",
    )
    assert run.maps_folder == tmp_path / "steering" / "maps"
    assert run.pipeline_record("train.btk") == tmp_path / "pipeline" / "train.btk.json"
    assert run.relative(run.analysis("btk") / "latents.parquet") == "analysis/btk/latents.parquet"


def test_the_pipeline_writes_where_the_layout_says(tmp_path):
    config = {
        "run": {"out": str(tmp_path)},
        "cache": {},
        "train": {"btk": {}},
        "adl": {},
        "tuco": {},
        "steer": {"crosscoder": "btk"},
    }
    run = RunFolder(tmp_path)
    fixed = {step.name: step.fixed for step in plan(config)}
    options = {step.name: step.options for step in plan(config)}
    assert fixed["cache"]["out"] == run.cache
    assert fixed["train.btk"]["out"] == run.dictionary("btk")
    assert fixed["adl"]["out"] == run.adl and fixed["tuco"]["out"] == run.tuco
    assert fixed["steer"]["out"] == run.steering
    assert options["steer"]["crosscoder"] == str(run.dictionary("btk"))
    assert record_path(tmp_path, plan(config)[0]) == run.pipeline_record("cache")


def test_the_app_reader_keeps_every_layout_path(tmp_path):
    """The app's RunFolder adds readers; none of them may shadow a layout path."""
    layout, reader = RunFolder(tmp_path), AppRunFolder(tmp_path)
    names = [n for n in vars(RunFolder) if not n.startswith("_")]
    for name in names:
        assert getattr(AppRunFolder, name) is getattr(RunFolder, name), name
    assert reader.analysis("x") == layout.analysis("x") and reader.root == Path(tmp_path)
