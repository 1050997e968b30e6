"""Optional experiment tracking beside `log.jsonl`: every logged training record also goes to
Weights & Biases (offline by default: no network, no account; `wandb sync` uploads later) or to
TensorBoard. `make_tracker(None)` tracks nothing."""

import os
from pathlib import Path
from typing import Any, Protocol

from interp.errors import InterpError

TRACKERS = ("wandb", "tensorboard")


class Tracker(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NoTracker:
    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class WandbTracker:
    """A wandb run in OUT/wandb; mode from $WANDB_MODE, else offline."""

    def __init__(self, out_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "interp-workbench"),
            name=Path(out_dir).name,
            dir=str(out_dir),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=config,
        )

    def log(self, record: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in record.items() if k != "step"}, step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


class TensorBoardTracker:
    """Scalars in OUT/tensorboard, one tag per record key, x = the step."""

    def __init__(self, out_dir: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                self.writer.add_scalar(key, value, int(record["step"]))

    def close(self) -> None:
        self.writer.close()


def make_tracker(kind: str | None, out_dir: Path, config: dict[str, Any]) -> Tracker:
    if kind is None:
        return NoTracker()
    if kind not in TRACKERS:
        raise InterpError(f"--log-to {kind!r}: expected one of {', '.join(TRACKERS)}")
    try:
        return (WandbTracker if kind == "wandb" else TensorBoardTracker)(out_dir, config)
    except ImportError as error:
        package = "wandb" if kind == "wandb" else "tensorboard"
        raise InterpError(
            f"--log-to {kind} needs the {package} package ({error}): pip install {package}"
        ) from None
