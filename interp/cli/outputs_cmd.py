"""`interp weights`, `interp horizon`, `interp amplify`: diffing beyond activations, in the
weights and in the outputs (crosscoders.diffing.{weights, horizon, amplify}). The options are
declared in crosscoders.diffing.options; this layer only parses and calls
crosscoders.diffing.commands."""

import json
from pathlib import Path
from typing import Annotated

import typer

from crosscoders.diffing.options import AmplifyOptions, HorizonOptions, WeightsOptions
from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.diffing_cmd import BaseOption, ChatOption
from interp.cli.options import options_from


def _out(folder: str) -> object:
    return typer.Option(
        "--out", callback=check.output_folder, help=f"results folder (RUN/{folder})"
    )


@options_from("options", WeightsOptions)
def weights(
    options: WeightsOptions,
    out: Annotated[Path, _out("weights")],
    base: BaseOption = DEFAULT_PAIR[0],
    chat: Annotated[
        str, typer.Option(help="fine-tuned model spec (merged weights)")
    ] = DEFAULT_PAIR[1],
) -> None:
    """Spectrum of every weight change dW = W_chat - W_base (rank, effective rank, energy in the
    top singular values) and intruder dimensions per layer and module."""
    from crosscoders.diffing import commands

    typer.echo(json.dumps(commands.weights(options, base=base, chat=chat, out=out)))


@options_from("options", HorizonOptions)
def horizon(
    options: HorizonOptions,
    out: Annotated[Path, _out("horizon")],
    base: BaseOption = DEFAULT_PAIR[0],
    chat: ChatOption = DEFAULT_PAIR[1],
) -> None:
    """Entropy and branching factor (exp entropy) of base and chat along both models'
    generations, by position class (template, prompt, first response tokens, later)."""
    from crosscoders.diffing import commands

    typer.echo(json.dumps(commands.horizon(options, base=base, chat=chat, out=out)))


@options_from("options", AmplifyOptions)
def amplify(
    options: AmplifyOptions,
    out: Annotated[Path, _out("amplification")],
    base: BaseOption = DEFAULT_PAIR[0],
    chat: ChatOption = DEFAULT_PAIR[1],
) -> None:
    """Greedy generations on neutral prompts from logits_base + alpha (logits_chat -
    logits_base) (emulated fine-tuning / proxy-tuning / diff amplification)."""
    from crosscoders.diffing import commands

    typer.echo(json.dumps(commands.amplify(options, base=base, chat=chat, out=out)))


def register(app: typer.Typer) -> None:
    app.command("weights")(weights)
    app.command("horizon")(horizon)
    app.command("amplify")(amplify)
