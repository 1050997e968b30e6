"""The wheel: it carries every package and the data the package reads at run time (the repo's
top-level `data/` as `interp/_data/`), and a non-editable install finds that data from any
folder."""

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("interp", "crosscoders", "steering", "app")
NOT_BUILD_INPUTS = shutil.ignore_patterns(
    ".git", ".venv", "build", "runs", "artifacts", "*.egg-info", "__pycache__", ".*_cache"
)


def builds_wheels_offline() -> bool:
    """setuptools builds wheels itself from 70.1 (`bdist_wheel` moved in); older ones need the
    `wheel` package. Without either, pip's isolated build fetches them from the index."""
    return (
        importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
        or importlib.util.find_spec("wheel") is not None
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout (a build writes build/ and *.egg-info
    into its source folder; the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("source") / "interp-workbench"
    shutil.copytree(REPO, source, ignore=NOT_BUILD_INPUTS)
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if builds_wheels_offline() else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, str(source)]
        + ["-w", str(out)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    (wheel,) = out.glob("interp_workbench-*.whl")
    return wheel


def test_the_wheel_has_every_module_and_the_shipped_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "interp/_data/chat-tune/adapter_model.safetensors",
        "interp/_data/chat-tune/adapter_config.json",
        "interp/_data/chat-tune/chat_template.jinja",
        "interp/_data/chat-tune/conversations.jsonl",
        "interp/_data/pipelines/quick.toml",
        "interp/_data/pipelines/full.toml",
        "interp/_data/datasets.json",
    ):
        assert needed in names
    data = {
        "interp/_data/" + path.relative_to(REPO / "data").as_posix()
        for path in (REPO / "data").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert data <= names, sorted(data - names)
    modules = {
        path.relative_to(REPO).as_posix()
        for root in ROOTS
        for path in (REPO / root).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= names, sorted(modules - names)
    assert not any(name.startswith(("data/", "tests/")) for name in names)


def test_an_installed_wheel_finds_its_data_from_any_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        """
        import contextlib, io, json, sys
        sys.path.insert(0, sys.argv[1])
        import interp
        from interp.builtin_models import CHAT_TUNE_DIR
        from interp.datasets import MANIFEST_FILE
        from interp.paths import PROJECT_DATA_DIR
        from interp.pipeline import PROFILES_DIR, load_config, plan
        from interp.cli.main import main

        steps = plan(load_config(PROFILES_DIR / "quick.toml"))
        sys.argv = ["interp", "models"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main() == 0
        print(json.dumps({
            "module": interp.__file__,
            "data": str(PROJECT_DATA_DIR),
            "adapter": (CHAT_TUNE_DIR / "adapter_model.safetensors").is_file(),
            "recipes": sorted(json.loads(MANIFEST_FILE.read_text())),
            "steps": [step.name for step in steps],
            "models": [json.loads(line) for line in out.getvalue().splitlines()],
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["module"]).is_relative_to(target)
    assert found["data"] == str(target / "interp" / "_data")
    assert found["adapter"]
    assert found["recipes"] == sorted(json.loads((REPO / "data" / "datasets.json").read_text()))
    assert found["steps"][0] == "cache"
    chat = next(row for row in found["models"] if row["name"] == "gemma-3-270m-chat")
    assert chat["adapter_present"] is True
