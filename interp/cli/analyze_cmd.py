"""`interp analyze RUN [--dict NAME]`: the model-diffing analysis of one dictionary of a run folder
(crosscoders.diffing.run), written to `RUN/analysis/NAME/`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from crosscoders.diffing.options import AnalyzeOptions
from interp.cli.options import options_from


@options_from("options", AnalyzeOptions)
def analyze(
    run: Annotated[Path, typer.Argument(help="run folder (holds cache/ and dictionaries/)")],
    options: AnalyzeOptions,
    dict_name: str = typer.Option(None, "--dict", help="dictionary name (default: the only one)"),
    compare: str = typer.Option(
        None, help="comma-separated analysed dictionaries: only write analysis/comparison.md"
    ),
) -> None:
    """Latent table + Latent Scaling, examples, decoder logits, causal KL, token shift, report."""
    if compare:
        from crosscoders.diffing.report import write_comparison

        names = [name.strip() for name in compare.split(",") if name.strip()]
        typer.echo(str(write_comparison(run, names)))
        return
    from crosscoders.diffing import commands

    typer.echo(json.dumps(commands.analyze(options, run=run, dict_name=dict_name)))


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
