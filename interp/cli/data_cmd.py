"""`interp data list` and `interp data build`."""

import json

import typer

from interp.datasets import (
    MANIFEST_FILE,
    SPLITS,
    build_manifest,
    list_recipes,
    load_labelled,
)
from interp.fileio import atomic_write_json

data_app = typer.Typer(no_args_is_help=True, help="Dataset recipes from the bundled data packages.")


@data_app.command("list")
def list_command() -> None:
    """Each recipe with its counts per split (read from the installed packages)."""
    for recipe in list_recipes():
        counts = {split: len(load_labelled(recipe, split)) for split in SPLITS}
        typer.echo(json.dumps({"recipe": recipe, "counts": counts}))


@data_app.command("build")
def build_command() -> None:
    """Write data/datasets.json: per recipe the sources, versions, paths, licences and counts."""
    manifest = build_manifest()
    atomic_write_json(MANIFEST_FILE, manifest)
    for recipe, entry in manifest["recipes"].items():
        typer.echo(f"{recipe}: {entry['counts']}")
    typer.echo(f"wrote {MANIFEST_FILE}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
