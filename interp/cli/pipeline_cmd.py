"""`interp run CONFIG` (any subset of a pipeline's steps) and `interp demo` (the main job on the
default pair: a built-in pipeline profile, then the app on its run folder)."""

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from interp.errors import InterpError
from interp.pipeline import PROFILES_DIR, load_config, run_pipeline


def invoke_interp(argv: Sequence[str]) -> None:
    """Run one `interp` command in this process; a non-zero exit becomes an InterpError."""
    import sys

    from interp.cli.main import app

    # a command that relaunches itself (`--workers N` -> torchrun) reads its argv from sys.argv
    saved, sys.argv = sys.argv, ["interp", *argv]
    try:
        code = app(list(argv), standalone_mode=False)
    finally:
        sys.argv = saved
    if isinstance(code, int) and code != 0:
        raise InterpError(f"step `interp {' '.join(argv)}` exited with code {code}")


def _run(config_path: Path, out: Path | None, steps: str | None) -> Path:
    config = load_config(config_path)
    if out is not None:
        config["run"]["out"] = str(out)
    only = [name.strip() for name in steps.split(",") if name.strip()] if steps else None
    run_pipeline(config, invoke_interp, only=only, echo=typer.echo)
    return Path(config["run"]["out"])


def run(
    config: Annotated[
        Path, typer.Argument(help="pipeline config (TOML), e.g. data/pipelines/quick.toml")
    ],
    out: Annotated[Path | None, typer.Option(help="run folder (overrides [run] out)")] = None,
    steps: str = typer.Option(None, help="comma-separated steps, e.g. cache,train or train.l1"),
) -> None:
    """Run a pipeline config; steps already done with the same config are skipped."""
    folder = _run(config, out, steps)
    typer.echo(f"run folder: {folder}")


def demo(
    full: bool = typer.Option(
        False,
        "--full/--quick",
        help="quick: <= 20 min on a 2-core CPU; full: the paper-scale profile, meant for a GPU",
    ),
    out: Annotated[Path | None, typer.Option(help="run folder")] = None,
    no_app: bool = typer.Option(False, "--no-app", help="do not start the app at the end"),
    port: int = typer.Option(8501, help="port of the app"),
) -> None:
    """The main job on the default pair: cache, BatchTopK and L1 crosscoders, diffing analysis,
    TuCo, LinEAS and its baselines; then the app on the run folder. Rerun to resume."""
    profile = PROFILES_DIR / ("full.toml" if full else "quick.toml")
    folder = _run(profile, out, None)
    typer.echo(f"run folder: {folder}")
    if not no_app:
        from interp.cli.app_cmd import app as start_app

        start_app(folder, port=port, host="127.0.0.1")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)
