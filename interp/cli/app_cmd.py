"""`interp app RUN_FOLDER`: the Streamlit app on a run folder, headless, bound to 127.0.0.1 unless
told otherwise (the app reads local files and loads models: not something to expose by default)."""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from interp.cli import validators as check
from interp.errors import InterpError
from interp.run_folder import RUN_FOLDER_ENV

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"


def streamlit_command(port: int, host: str) -> list[str]:
    """The `streamlit run` command line: headless (no browser opened, no usage statistics), no
    file watcher (the app's code does not change under a user), viewer toolbar."""
    # fmt: off
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_MAIN),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # no deploy / rerun / clear-cache buttons
    ]
    # fmt: on


def app(
    run_folder: Annotated[Path, typer.Argument(help="a run folder (runs/NAME) the pipeline wrote")],
    port: int = typer.Option(8501, callback=check.port, help="port to serve on"),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 exposes the app)"),
) -> None:
    """Browse a run folder in the Streamlit app (latents, TuCo, steering, base-vs-chat shift)."""
    if not run_folder.is_dir():
        raise InterpError(
            f"run folder {str(run_folder)!r} does not exist: expected a folder a pipeline step "
            "wrote (runs/NAME)"
        )
    command = streamlit_command(port, host)
    typer.echo(f"serving {run_folder} on http://{host}:{port}")
    env = {**os.environ, RUN_FOLDER_ENV: str(run_folder.resolve())}
    os.execve(sys.executable, command, env)


def register(app_: typer.Typer) -> None:
    app_.command("app")(app)
