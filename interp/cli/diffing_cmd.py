"""`interp adl`, `interp diff-sae`, `interp change-profile`, `interp evaluate-diffing`: the
diffing methods with known answers and their score (crosscoders.diffing.{adl, difference_sae,
change_profile, evaluate}). This layer only parses and calls."""

import json
from pathlib import Path
from typing import Annotated

import typer

from crosscoders.diffing.options import (
    AdlOptions,
    ChangeProfileOptions,
    DiffSaeOptions,
    ScienceOptions,
)
from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.options import options_from

BaseOption = Annotated[str, typer.Option(help="base model spec")]
ChatOption = Annotated[str, typer.Option(help="fine-tuned model spec")]


@options_from("options", AdlOptions)
def adl(
    options: AdlOptions,
    out: Annotated[
        Path,
        typer.Option("--out", callback=check.output_folder, help="results folder (e.g. RUN/adl)"),
    ],
    base: BaseOption = DEFAULT_PAIR[0],
    chat: ChatOption = DEFAULT_PAIR[1],
    layer: str = typer.Option("0.5", help="layer of patchscope and steering (int or fraction)"),
) -> None:
    """Activation Difference Lens: mean h_chat - h_base at the first k positions of unrelated
    text, per layer; logit lens, patchscope, steering, TuCo amplification."""
    from crosscoders.diffing import commands

    summary = commands.adl(options, base=base, chat=chat, layer=layer, out=out)
    typer.echo(json.dumps(summary))


@options_from("options", DiffSaeOptions)
def diff_sae(
    run: Annotated[Path, typer.Argument(help="run folder holding cache/ (writes RUN/diff-sae)")],
    options: DiffSaeOptions,
) -> None:
    """Difference SAE: BatchTopK SAE on h_chat - h_base of RUN/cache, its top latents read
    through the fine-tuned model's logit lens and their max-activating examples."""
    from crosscoders.diffing import commands

    typer.echo(str(commands.difference_sae(options, run=run)))


@options_from("options", ChangeProfileOptions)
def change_profile(
    run: Annotated[Path, typer.Argument(help="run folder (writes RUN/change_profile)")],
    options: ChangeProfileOptions,
    base: BaseOption = DEFAULT_PAIR[0],
    chat: ChatOption = DEFAULT_PAIR[1],
) -> None:
    """||h_chat - h_base|| / ||h_base|| per layer and token class: every layer from a pass over
    held-out wiki texts and chats, the cached layer from RUN/cache when there is one."""
    from crosscoders.diffing import commands

    typer.echo(str(commands.change_profile(options, run=run, base=base, chat=chat)))


@options_from("options", ScienceOptions)
def evaluate_diffing(
    config: Annotated[Path, typer.Argument(help="science profile (data/pipelines/science.toml)")],
    options: ScienceOptions,
    out: Annotated[
        Path | None,
        typer.Option(
            callback=check.output_folder, help="run folder (default: the profile's [run] out)"
        ),
    ] = None,
) -> None:
    """Run every diffing method on every organism of the profile and write one table
    (RUN/diffing.json + RUN/diffing.md)."""
    from crosscoders.diffing.science import evaluate
    from interp.cli.pipeline_cmd import check_steps, run_step

    json_path, md_path = evaluate(config, options, check_steps, run_step, out)
    typer.echo(json.dumps({"json": str(json_path), "markdown": str(md_path)}))


def register(app: typer.Typer) -> None:
    app.command("adl")(adl)
    app.command("diff-sae")(diff_sae)
    app.command("change-profile")(change_profile)
    app.command("evaluate-diffing")(evaluate_diffing)
