"""`--workers N` on a command: rerun this very command under torch.distributed.run (torchrun)."""

import subprocess
import sys
from typing import NoReturn

import typer


def relaunch_under_torchrun(workers: int) -> NoReturn:
    """Run `interp <this command's argv without --workers>` in `workers` processes and exit with
    their status (each process reads its rank from the environment torchrun sets)."""
    args = list(sys.argv[1:])
    for index, arg in enumerate(args):
        if arg == "--workers":
            del args[index : index + 2]
            break
        if arg.startswith("--workers="):
            del args[index]
            break
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={workers}", "-m", "interp.cli.main", *args,
    ]  # fmt: skip
    raise typer.Exit(subprocess.run(command, check=False).returncode)
