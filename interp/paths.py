"""Where the project keeps things: the user cache (dequantized weights) and the shipped data."""

import os
from pathlib import Path


def _project_data_dir() -> Path:
    """The shipped data (chat-tune adapter, pipeline profiles, dataset recipes): `interp/_data`
    in an installed wheel (pyproject.toml maps the repo's `data/` there), else the checkout's
    top-level `data/` (an editable install or the source tree)."""
    package = Path(__file__).resolve().parent
    installed = package / "_data"
    return installed if installed.is_dir() else package.parent / "data"


PROJECT_DATA_DIR = _project_data_dir()


def user_cache_dir() -> Path:
    """`$INTERP_CACHE_DIR`, else `$XDG_CACHE_HOME/interp`, else `~/.cache/interp`."""
    if "INTERP_CACHE_DIR" in os.environ:
        root = Path(os.environ["INTERP_CACHE_DIR"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "interp"
    root.mkdir(parents=True, exist_ok=True)
    return root
