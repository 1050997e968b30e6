"""`--workers N` on a command (and `workers = N` in a pipeline table): run the command under
torch.distributed.run (torchrun)."""

import subprocess
import sys
from collections.abc import Sequence
from typing import NoReturn

import typer


def torchrun_command(workers: int, args: Sequence[str]) -> list[str]:
    """`interp ARGS` in `workers` processes (each reads its rank from the environment torchrun
    sets)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={workers}", "-m", "interp.cli.main", *args,
    ]  # fmt: skip


def relaunch_under_torchrun(workers: int) -> NoReturn:
    """Run `interp <this command's argv without --workers>` in `workers` processes and exit with
    their status."""
    args = list(sys.argv[1:])
    for index, arg in enumerate(args):
        if arg == "--workers":
            del args[index : index + 2]
            break
        if arg.startswith("--workers="):
            del args[index]
            break
    command = torchrun_command(workers, args)
    raise typer.Exit(subprocess.run(command, check=False).returncode)
