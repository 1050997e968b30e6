"""`interp tuco score | generate | experiments`: TuCo of prompts, alpha-scaled generation, and the
paper's experiments written into a run folder."""

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.options import DeviceOption, options_from
from interp.command_options import MODEL_DTYPE_HELP, TucoExperimentOptions

tuco_app = typer.Typer(no_args_is_help=True, help="Tuning Contribution (Nuti et al. 2025).")

BASE = typer.Option(DEFAULT_PAIR[0], help="pre-trained model spec (built-in, folder, HF id)")
CHAT = typer.Option(DEFAULT_PAIR[1], help="fine-tuned model spec")
ModelDtype = str  # torch's name, as interp.cli.validators.model_dtype returns it
DTYPE = typer.Option("float32", callback=check.model_dtype, help=MODEL_DTYPE_HELP)


@tuco_app.command("score")
def score(
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="user message (repeatable)")],
    base: str = BASE,
    chat: str = CHAT,
    dtype: ModelDtype = DTYPE,
    device: DeviceOption = "auto",
    batch_size: int = typer.Option(8, callback=check.positive, help="prompts per forward pass"),
    per_token: bool = typer.Option(False, help="also print TuCo at every token"),
) -> None:
    """TuCo and OutputCo of each prompt (chat template, last prompt token), one JSON line each."""
    from interp.models import load_pair_in
    from interp.tuco import score_prompts

    pair = load_pair_in(base, chat, dtype, device)
    for result in score_prompts(pair, prompt, batch_size=batch_size):
        line = {
            "prompt": result.prompt,
            "tuco": result.tuco,
            "output_contribution": result.output_contribution,
            "cumulative": [round(value, 4) for value in result.cumulative],
        }
        if per_token:
            line["per_token"] = dict(zip(result.tokens, result.per_token, strict=True))
        typer.echo(json.dumps(line))


@tuco_app.command("generate")
def generate_command(
    prompt: str = typer.Option(..., "--prompt", "-p", help="user message"),
    alpha: Annotated[
        list[float] | None, typer.Option(help="scale(s) of the fine-tuning component [0, 1]")
    ] = None,
    base: str = BASE,
    chat: str = CHAT,
    dtype: ModelDtype = DTYPE,
    device: DeviceOption = "auto",
    max_new_tokens: int = typer.Option(40, callback=check.positive, help="tokens to generate"),
) -> None:
    """Greedy completion of the alpha-scaled chat model (x_{l+1} = x_l + PTC + alpha FTC)."""
    from interp.generation import decode_completions
    from interp.models import load_pair_in
    from interp.tuco import generate, tokenize_prompts

    pair = load_pair_in(base, chat, dtype, device)
    batch = tokenize_prompts(pair, [prompt])
    for value in alpha or [0.0, 1.0]:
        new_tokens = generate(pair, **batch, alpha=value, max_new_tokens=max_new_tokens)
        completion = decode_completions(pair.tokenizer, new_tokens)[0]
        typer.echo(json.dumps({"alpha": value, "completion": completion}))


@tuco_app.command("experiments")
@options_from("options", TucoExperimentOptions)
def experiments(
    options: TucoExperimentOptions,
    out: Annotated[
        Path,
        typer.Option(callback=check.output_folder, help="output folder, e.g. runs/<name>/tuco"),
    ],
    base: str = BASE,
    chat: str = CHAT,
) -> None:
    """TuCo on benign / harmful / jailbreak prompts, AUCs, jailbreak success, refusal vs alpha."""
    from interp.tuco_experiments import tuco_experiments

    summary = tuco_experiments(options, base=base, chat=chat, out=out)
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(tuco_app, name="tuco")
