"""`interp analyze RUN [--dict NAME]`: the model-diffing analysis of one dictionary of a run folder
(crosscoders.diffing.run), written to `RUN/analysis/NAME/`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.cli import validators as check
from interp.cli.options import DeviceOption


def analyze(
    run: Annotated[Path, typer.Argument(help="run folder (holds cache/ and dictionaries/)")],
    dict_name: str = typer.Option(None, "--dict", help="dictionary name (default: the only one)"),
    tokens: int = typer.Option(
        None, callback=check.positive, help="stream at most this many cache tokens"
    ),
    split: str = typer.Option(
        "all", callback=check.cache_split, help="cache split to stream: all | train | validation"
    ),
    batch_size: int = typer.Option(
        1024, callback=check.positive, help="tokens per batch of the cache passes"
    ),
    n_prompts: int = typer.Option(
        16, callback=check.positive, help="held-out chat prompts for causal and token shift"
    ),
    max_new_tokens: int = typer.Option(
        32, callback=check.positive, help="greedy response length of the chat model"
    ),
    prompt_recipe: str = typer.Option("chat-benign", help="dataset recipe of the prompts"),
    max_logit_latents: int = typer.Option(
        2048, callback=check.non_negative, help="latents whose decoder logits are stored"
    ),
    units: str = typer.Option(
        None,
        help="comma-separated subset of: latents, examples, decoder_views, causal, "
        "token_shift, report (default: all)",
    ),
    overwrite: bool = typer.Option(
        False, help="redo units whose results exist / replace a changed config's"
    ),
    seed: int = typer.Option(0, help="seed of the firing sample behind the quantile examples"),
    device: DeviceOption = "auto",
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
    from crosscoders.diffing.run import UNIT_NAMES, AnalysisConfig
    from crosscoders.diffing.run import analyze as run_analysis

    config = AnalysisConfig(
        split=split,
        max_tokens=tokens,
        batch_size=batch_size,
        n_prompts=n_prompts,
        max_new_tokens=max_new_tokens,
        prompt_recipe=prompt_recipe,
        max_logit_latents=max_logit_latents,
        seed=seed,
    )
    chosen = tuple(u.strip() for u in units.split(",") if u.strip()) if units else UNIT_NAMES
    context = run_analysis(run, dict_name, config, units=chosen, overwrite=overwrite, device=device)
    typer.echo(json.dumps({"out": str(context.out), "timings_s": context.timings}))


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
