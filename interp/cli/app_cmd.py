"""`interp app RUN_FOLDER`: browse a run folder in the Streamlit app (interp.app_launch)."""

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.options import options_from
from interp.command_options import AppOptions


@options_from("options", AppOptions)
def app(
    run_folder: Annotated[Path, typer.Argument(help="a run folder (runs/NAME) the pipeline wrote")],
    options: AppOptions,
) -> None:
    """Browse a run folder in the Streamlit app (latents, TuCo, steering, base-vs-chat shift)."""
    from interp.app_launch import serve_app

    serve_app(options, run_folder, echo=typer.echo)


def register(app_: typer.Typer) -> None:
    app_.command("app")(app)
