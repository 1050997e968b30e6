"""Save and load a dictionary: a folder with `config.json` + `weights.safetensors`, each written
durably (interp.fileio: unique temp name, fsync, rename), the weights last."""

from pathlib import Path

import torch
from safetensors.torch import load_file, save

from crosscoders.config import CrossCoderConfig
from crosscoders.crosscoder import CrossCoder
from interp.errors import InterpError
from interp.fileio import atomic_write_bytes, atomic_write_json, read_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """safetensors, written whole or not at all (interp.fileio.atomic_write_bytes)."""
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata)
    atomic_write_bytes(path, data)


def save_crosscoder(coder: CrossCoder, folder: Path) -> Path:
    """The weights are written last: a folder with weights has the config that goes with them."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / CONFIG_FILE, coder.config.to_dict())
    save_tensors(folder / WEIGHTS_FILE, dict(coder.state_dict()), {"format": "interp-crosscoder"})
    return folder


def load_crosscoder(folder: Path, device: str | torch.device = "cpu") -> CrossCoder:
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise InterpError(
            f"{str(folder)!r} is not a dictionary folder: expected {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    coder = CrossCoder(CrossCoderConfig.from_dict(read_json(folder / CONFIG_FILE)))
    state = load_file(str(folder / WEIGHTS_FILE))
    missing = set(coder.state_dict()) ^ set(state)
    if missing:
        raise InterpError(
            f"{str(folder)!r}: weights do not match config.json (tensors {sorted(missing)})"
        )
    coder.load_state_dict(state)
    return coder.to(device).eval()
