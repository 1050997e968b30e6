"""The config rule of the weight and output diffing commands (`interp weights`, `interp horizon`,
`interp amplify`): each writes `config.json` into its folder first, and a folder that holds
another config is refused unless `force` (then its results are replaced)."""

import json
from pathlib import Path
from typing import Any

from interp.errors import InterpError
from interp.fileio import atomic_write_json


def claim_output_folder(out: Path, config: dict[str, Any], force: bool = False) -> None:
    """Write `out/config.json`, refusing a folder that holds another config unless `force`."""
    path = Path(out) / "config.json"
    if path.is_file() and not force:
        if json.loads(path.read_text()) != json.loads(json.dumps(config)):
            raise InterpError(
                f"{str(out)!r} holds results of another config: pick a new folder or pass --force"
            )
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, config)
