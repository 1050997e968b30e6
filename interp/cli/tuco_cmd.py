"""`interp tuco score | generate | experiments`: TuCo of prompts, alpha-scaled generation, and the
paper's experiments written into a run folder."""

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.options import options_from
from interp.command_options import (
    TucoExperimentOptions,
    TucoGenerateOptions,
    TucoPairOptions,
    TucoScoreOptions,
)
from interp.options import option_help

base_help, chat_help = (option_help(TucoPairOptions, name) for name in ("base", "chat"))
tuco_app = typer.Typer(no_args_is_help=True, help="Tuning Contribution (Nuti et al. 2025).")


@tuco_app.command("score")
@options_from("pair", TucoPairOptions)
@options_from("options", TucoScoreOptions)
def score(options: TucoScoreOptions, pair: TucoPairOptions) -> None:
    """TuCo and OutputCo of each prompt (chat template, last prompt token), one JSON line each."""
    from interp.models import load_pair_in
    from interp.tuco import score_prompts

    loaded = load_pair_in(pair.base, pair.chat, pair.model_dtype, pair.device)
    for result in score_prompts(loaded, options.prompt, batch_size=options.batch_size):
        line = {
            "prompt": result.prompt,
            "tuco": result.tuco,
            "output_contribution": result.output_contribution,
            "cumulative": [round(value, 4) for value in result.cumulative],
        }
        if options.per_token:
            line["per_token"] = dict(zip(result.tokens, result.per_token, strict=True))
        typer.echo(json.dumps(line))


@tuco_app.command("generate")
@options_from("pair", TucoPairOptions)
@options_from("options", TucoGenerateOptions)
def generate_command(options: TucoGenerateOptions, pair: TucoPairOptions) -> None:
    """Greedy completion of the alpha-scaled chat model (x_{l+1} = x_l + PTC + alpha FTC)."""
    from interp.generation import decode_completions
    from interp.models import load_pair_in
    from interp.tuco import generate, tokenize_prompts

    loaded = load_pair_in(pair.base, pair.chat, pair.model_dtype, pair.device)
    batch = tokenize_prompts(loaded, [options.prompt])
    for value in options.alpha or [0.0, 1.0]:
        new_tokens = generate(loaded, **batch, alpha=value, max_new_tokens=options.max_new_tokens)
        completion = decode_completions(loaded.tokenizer, new_tokens)[0]
        typer.echo(json.dumps({"alpha": value, "completion": completion}))


@tuco_app.command("experiments")
@options_from("options", TucoExperimentOptions)
def experiments(
    options: TucoExperimentOptions,
    out: Annotated[
        Path,
        typer.Option(callback=check.output_folder, help="output folder, e.g. runs/<name>/tuco"),
    ],
    base: Annotated[str, typer.Option(help=base_help)] = DEFAULT_PAIR[0],
    chat: Annotated[str, typer.Option(help=chat_help)] = DEFAULT_PAIR[1],
) -> None:
    """TuCo on benign / harmful / jailbreak prompts, AUCs, jailbreak success, refusal vs alpha."""
    from interp.tuco_experiments import tuco_experiments

    summary = tuco_experiments(options, base=base, chat=chat, out=out)
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(tuco_app, name="tuco")
