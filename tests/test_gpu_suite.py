"""benchmarks/gpu_suite_setup.py: the pipeline profile it rewrites for the GPU suite is the
shipped profile with only the run, the pair, the cache's tokens and the devices changed. (The
suite itself: `GPU_SUITE_SMOKE=1 bash benchmarks/gpu_suite.sh`, ~8 minutes on the shared CPU.)"""

import copy
import os
import sys
import tomllib
from argparse import Namespace
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from gpu_suite_setup import to_toml, write_pipeline  # noqa: E402

PROFILES = sorted((Path(__file__).parent.parent / "data" / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_shipped_profile_round_trips_through_to_toml(profile):
    tables = tomllib.loads(profile.read_text())
    assert tomllib.loads(to_toml(tables)) == tables


def test_the_suite_profile_changes_only_run_pair_tokens_and_devices(tmp_path):
    profile = BENCHMARKS.parent / "data" / "pipelines" / "full.toml"
    args = Namespace(
        profile=str(profile), out_toml=str(tmp_path / "p.toml"), pair=["/m/base", "/m/chat"],
        out="/r", tokens=1234, device="cpu",
    )  # fmt: skip
    write_pipeline(args)
    written = tomllib.loads((tmp_path / "p.toml").read_text())
    expected = copy.deepcopy(tomllib.loads(profile.read_text()))
    expected["run"].update(out="/r", base="/m/base", chat="/m/chat")
    expected["cache"]["tokens"] = 1234
    devices = 0
    for table in expected.values():
        for entries in [table, *(v for v in table.values() if isinstance(v, dict))]:
            if "device" in entries:
                entries["device"] = "cpu"
                devices += 1
    assert devices >= 5 and written == expected


# benchmarks/gpu_kit.py: what a GPU machine with no package index gets


def test_the_kit_data_folder_stands_in_for_the_data_packages(tmp_path):
    import json
    import subprocess

    from gpu_kit import write_data

    from interp.datasets import build_manifest, read_labelled_refusals

    copied = write_data(tmp_path / "data")
    assert copied > 5 * 2**20  # the wiki summaries alone are 6 MB
    probe = (
        "import json; from interp.builtin_models import package_dir;"
        "from interp.datasets import build_manifest, data_package_files, read_labelled_refusals;"
        "print(json.dumps({'dirs': sorted({str(package_dir(m, d)) for d, m, _ in"
        " data_package_files()}), 'manifest': build_manifest(),"
        " 'refusals': len(read_labelled_refusals())}))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "data")}
    shown = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert len(shown["dirs"]) == 5
    assert all(folder.startswith(str(tmp_path / "data")) for folder in shown["dirs"])
    # the same texts per recipe and split, and the same versions, as the installed packages give
    assert shown["manifest"] == json.loads(json.dumps(build_manifest()))
    assert shown["refusals"] == len(read_labelled_refusals()) > 0


def installed_here() -> dict[str, str]:
    from importlib import metadata

    from packaging.utils import canonicalize_name

    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_the_kit_carries_what_the_target_lacks_and_nothing_it_has():
    from importlib import metadata

    from gpu_kit import LEFT_OUT, wheels_to_carry

    everything = installed_here()
    assert wheels_to_carry(everything, "3.12") == {}
    # a version the project's requirement refuses (typer>=0.29,<0.30), or one the list does
    # not give while the requirement has an upper bound, is carried
    assert wheels_to_carry({**everything, "typer": "0.16.0"}, "3.12") == {
        "typer": everything["typer"]
    }
    assert "typer" in wheels_to_carry({**everything, "typer": None}, "3.12")
    # a missing package is carried with what it needs that the target lacks
    without = {k: v for k, v in everything.items() if k not in ("nnsight", "pydantic")}
    assert wheels_to_carry(without, "3.12") == {
        "nnsight": metadata.version("nnsight"),
        "pydantic": metadata.version("pydantic"),
    }
    # the app's stack and wandb are never carried, nor what only they need
    lacking_app = {k: v for k, v in everything.items() if k not in (*LEFT_OUT, "altair")}
    assert wheels_to_carry(lacking_app, "3.12") == {}


def test_the_kit_pair_source_gives_the_default_pair_config_and_tokenizer(tmp_path):
    from gpu_suite_setup import (
        default_pair_config_and_tokenizer,
        pair_source_config_and_tokenizer,
        write_pair_source,
    )

    write_pair_source(tmp_path / "source")
    assert (tmp_path / "source" / "tokenizer.json.xz").stat().st_size < 5 * 2**20
    assert not (tmp_path / "source" / "tokenizer.json").exists()
    config, tokenizer = pair_source_config_and_tokenizer(tmp_path / "source")
    expected_config, expected_tokenizer = default_pair_config_and_tokenizer()

    def settings(config):
        return {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}

    assert settings(config) == settings(expected_config)
    assert config.num_hidden_layers == 18 and config.hidden_size == 640
    text = "<start_of_turn>user\nWhat did fine-tuning change? 温度 42<end_of_turn>\n"
    assert tokenizer(text).input_ids == expected_tokenizer(text).input_ids
    assert len(tokenizer) == len(expected_tokenizer) == config.vocab_size
