"""`interp app RUN_FOLDER`: the Streamlit app on a run folder, headless, bound to 127.0.0.1 unless
told otherwise (the app reads local files and loads models: not something to expose by default)."""

import os
import sys
from collections.abc import Callable
from pathlib import Path

from interp.command_options import AppOptions
from interp.errors import InterpError
from interp.run_folder import RUN_FOLDER_ENV

APP_MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"


def streamlit_command(options: AppOptions) -> list[str]:
    """The `streamlit run` command line: headless (no browser opened, no usage statistics), no
    file watcher (the app's code does not change under a user), viewer toolbar."""
    # fmt: off
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_MAIN),
        "--server.address", options.host,
        "--server.port", str(options.port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # no deploy / rerun / clear-cache buttons
    ]
    # fmt: on


def serve_app(options: AppOptions, run_folder: Path, echo: Callable[[str], object] = print) -> None:
    """Replace this process by the Streamlit app on `run_folder` (echoes the address first)."""
    if not run_folder.is_dir():
        raise InterpError(
            f"run folder {str(run_folder)!r} does not exist: expected a folder a pipeline step "
            "wrote (runs/NAME)"
        )
    command = streamlit_command(options)
    echo(f"serving {run_folder} on http://{options.host}:{options.port}")
    env = {**os.environ, RUN_FOLDER_ENV: str(run_folder.resolve())}
    os.execve(sys.executable, command, env)
