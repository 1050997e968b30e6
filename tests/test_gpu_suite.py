"""benchmarks/gpu_suite_setup.py: the pipeline profile it rewrites for the GPU suite is the
shipped profile with only the run, the pair, the cache's tokens and the devices changed. (The
suite itself: `GPU_SUITE_SMOKE=1 bash benchmarks/gpu_suite.sh`, ~8 minutes on the shared CPU.)"""

import copy
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
