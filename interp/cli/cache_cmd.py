"""`interp cache` (write or resume a paired activation cache) and `interp cache verify PATH`."""

from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.options import options_from
from interp.cli.torchrun import relaunch_under_torchrun
from interp.command_options import CacheOptions


@options_from("options", CacheOptions)
def cache(
    context: typer.Context,
    options: CacheOptions,
    pair: tuple[str, str] = typer.Option(DEFAULT_PAIR, help="BASE CHAT model specs"),
    layers: str = typer.Option("0.5", help="comma-separated layers: ints, negatives, fractions"),
    out: Annotated[
        Path | None,
        typer.Option(callback=check.output_folder, help="output folder (rerun to resume)"),
    ] = None,
) -> None:
    """Cache base and chat residual streams on the same token stream (resumable)."""
    if context.invoked_subcommand is not None:
        return
    if out is None:
        raise typer.BadParameter("--out is required", param_hint="--out")
    if options.workers > 1:
        relaunch_under_torchrun(options.workers)
    from interp.cache.command import cache_activations

    manifest = cache_activations(options, pair=pair, layers=layers, out=out)
    if manifest is not None:
        typer.echo(
            f"cached {manifest['n_tokens']} tokens x {len(manifest['models'])} models x layers "
            f"{manifest['layers']} in {manifest['n_shards']} shards: {out}"
        )


def verify(path: Annotated[Path, typer.Argument(help="cache folder")]) -> None:
    """Check every shard (sha256, shapes, dtypes, NaN/inf, token counts); exit 1 on a problem."""
    from interp.cache import verify_cache
    from interp.cache.manifest import read_manifest

    problems = verify_cache(path)
    for problem in problems:
        typer.echo(f"FAIL {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    manifest = read_manifest(path)
    typer.echo(f"ok: {len(manifest['shards'])} shards, {manifest['n_tokens']} tokens")


def register(app: typer.Typer) -> None:
    cache_app = typer.Typer(add_completion=False)
    cache_app.callback(invoke_without_command=True)(cache)
    cache_app.command("verify")(verify)
    app.add_typer(cache_app, name="cache")
