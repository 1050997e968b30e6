"""A virtual environment holding SAELens 6, built once and cached, to check our SAELens export
with SAELens's own loader (`SAE.load_from_disk`).

SAELens cannot be installed beside TransformerLens 4 (it pins transformer-lens < 4), so it lives
in its own venv under the user cache dir, keyed by the SAELens requirement, the Python version and
the torch version. torch is installed first, at the project venv's exact version (a `+cpu` build
comes from pip's find-links or the PyTorch CPU index), so that sae-lens does not pull a CUDA torch.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from interp.fileio import atomic_write_text, exclusive_lock
from interp.paths import user_cache_dir

SAELENS_REQUIREMENT = "sae-lens>=6,<7"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
READY_FILE = "interp-ready.txt"


def venv_dir() -> Path:
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    key = f"sae-lens6-{python}-torch{torch.__version__}".replace("+", "_")
    return user_cache_dir() / "saelens-venv" / key


def venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(command: list[str], log: list[str]) -> None:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    log.append(
        f"$ {' '.join(command)}  ({time.monotonic() - started:.0f} s, rc {result.returncode})"
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"building the SAELens venv failed at: {' '.join(command)}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def ensure_saelens_venv() -> Path:
    """The venv's python, building the venv first if no finished one is cached (a lock keeps two
    test processes from building it at once). Raises RuntimeError with pip's output on failure."""
    folder = venv_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder.parent / f"{folder.name}.lock"):
        if (folder / READY_FILE).exists():
            return venv_python(folder)
        log: list[str] = []
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", "--clear", str(folder)], log)
        pip = [str(venv_python(folder)), "-m", "pip", "install", "--quiet"]
        torch_pin = f"torch=={torch.__version__}"
        extra = ["--extra-index-url", TORCH_CPU_INDEX] if "+cpu" in torch.__version__ else []
        try:  # the wheel from pip's find-links (PIP_FIND_LINKS / pip.conf), deps from PyPI
            _run([*pip, torch_pin], log)
            extra = []
        except RuntimeError:  # no local wheel: the PyTorch CPU index
            _run([*pip, torch_pin, *extra], log)
        # the pin again, so resolving sae-lens keeps this torch
        _run([*pip, SAELENS_REQUIREMENT, torch_pin, *extra], log)
        log.append(f"total {time.monotonic() - started:.0f} s")
        atomic_write_text(folder / READY_FILE, "\n".join(log) + "\n")
    return venv_python(folder)


if __name__ == "__main__":
    print(ensure_saelens_venv())
    print((venv_dir() / READY_FILE).read_text())
