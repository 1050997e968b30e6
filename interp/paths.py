"""Where the project keeps things: the user cache (dequantized weights) and the shipped `data/`."""

import os
from pathlib import Path

PROJECT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def user_cache_dir() -> Path:
    """`$INTERP_CACHE_DIR`, else `$XDG_CACHE_HOME/interp`, else `~/.cache/interp`."""
    if "INTERP_CACHE_DIR" in os.environ:
        root = Path(os.environ["INTERP_CACHE_DIR"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "interp"
    root.mkdir(parents=True, exist_ok=True)
    return root
