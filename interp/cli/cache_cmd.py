"""`interp cache` (write or resume a paired activation cache) and `interp cache verify PATH`."""

from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.options import DeviceOption
from interp.cli.torchrun import relaunch_under_torchrun


def cache(
    ctx: typer.Context,
    pair: tuple[str, str] = typer.Option(DEFAULT_PAIR, help="BASE CHAT model specs"),
    layers: str = typer.Option("0.5", help="comma-separated layers: ints, negatives, fractions"),
    mix: str = typer.Option(
        "wiki:0.5,chat:0.5", callback=check.mixture, help="dataset mixture, recipe:token share"
    ),
    tokens: int = typer.Option(100_000, callback=check.positive, help="number of tokens to cache"),
    context: int = typer.Option(
        128, "--ctx", callback=check.positive, help="context length (documents are truncated)"
    ),
    batch_size: int = typer.Option(8, callback=check.positive, help="sequences per forward pass"),
    dtype: str = typer.Option(
        "bf16", callback=check.storage_dtype, help="storage dtype: bf16, fp16 or fp32"
    ),
    model_dtype: str = typer.Option(
        "auto",
        callback=check.model_dtype,
        help="dtype the models run in: auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16, fp32",
    ),
    out: Annotated[
        Path | None,
        typer.Option(callback=check.output_folder, help="output folder (rerun to resume)"),
    ] = None,
    seed: int = typer.Option(0, help="seed of the document order"),
    keep_special: bool = typer.Option(False, help="also cache BOS/PAD tokens"),
    shard_tokens: int | None = typer.Option(
        None, callback=check.positive, help="tokens per shard (default ~128 MiB)"
    ),
    split: str = typer.Option("train", help="dataset split to read"),
    workers: int = typer.Option(
        1, callback=check.positive, help="processes (torch.distributed, gloo); or use torchrun"
    ),
    device: DeviceOption = "auto",
    overwrite: bool = typer.Option(False, help="replace a cache of another config in --out"),
) -> None:
    """Cache base and chat residual streams on the same token stream (resumable)."""
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise typer.BadParameter("--out is required", param_hint="--out")
    if workers > 1:
        relaunch_under_torchrun(workers)
    from interp.cache import build_cache, cache_config
    from interp.cache.distributed import process_group
    from interp.models import load_pair

    loaded = load_pair(*pair, dtype=model_dtype, device=device)
    config = cache_config(
        loaded,
        layers=[part for part in layers.split(",") if part.strip()],
        mix=mix,
        n_tokens=tokens,
        ctx=context,
        batch_size=batch_size,
        dtype=dtype,
        seed=seed,
        keep_special=keep_special,
        shard_tokens=shard_tokens,
        split=split,
    )
    with process_group() as ranks:
        manifest = build_cache(loaded, config, out, ranks=ranks, overwrite=overwrite)
    if ranks.is_main:
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
