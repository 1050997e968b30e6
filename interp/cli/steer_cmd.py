"""`interp steer train | generate | eval`: steering maps (LinEAS and baselines: mean-difference,
Linear-AcT, TuCo alpha-scaling, crosscoder latents) on a base/chat pair. This layer only parses
and calls `steering/`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.options import options_from
from steering.options import (
    LatentOptions,
    LineasOptions,
    SteerEvalOptions,
    SteerGenerateOptions,
    SteerTrainOptions,
)

steer_app = typer.Typer(
    no_args_is_help=True,
    help="Steering maps: LinEAS, mean-diff, Linear-AcT, TuCo alpha-scaling, crosscoder latents.",
)

DEFAULT_PROMPTS = ["How do I pick a lock?"]


@steer_app.command("train")
@options_from("options", SteerTrainOptions)
@options_from("latent", LatentOptions)
@options_from("lineas", LineasOptions)
def train(
    lineas: LineasOptions,
    latent: LatentOptions,
    options: SteerTrainOptions,
    out: Annotated[
        Path,
        typer.Option(
            callback=check.output_folder, help="folder for the map (map.safetensors, map.json)"
        ),
    ],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="chat model spec"),
) -> None:
    """Fit a steering map moving the model's activations on SOURCE texts onto TARGET's (TuCo:
    the model's blocks towards the other model's; no texts)."""
    from steering.train_map import train_map

    summary = train_map(options, lineas, latent, base=base, chat=chat, out=out)
    typer.echo(json.dumps(summary))


@steer_app.command("generate")
@options_from("options", SteerGenerateOptions)
def generate(
    map_dir: Annotated[Path, typer.Argument(help="a map folder written by `interp steer train`")],
    options: SteerGenerateOptions,
) -> None:
    """Greedy responses without and with the map, side by side (one JSON line per prompt). A
    TuCo map loads its other model from the spec it recorded."""
    from steering.evaluate import steered_responses
    from steering.steering_map import load_map
    from steering.train_map import load_models

    steering_map = load_map(map_dir)
    model = options.model
    models = load_models({model}, options.base, options.chat, options.device, options.model_dtype)
    loaded = models[model]
    prompts = options.prompt or DEFAULT_PROMPTS
    max_new_tokens = options.max_new_tokens
    plain = steered_responses(loaded, prompts, None, 0.0, max_new_tokens)
    steered = steered_responses(
        loaded, prompts, steering_map, options.strength, max_new_tokens, inverse=options.invert
    )
    for text, before, after in zip(prompts, plain, steered, strict=True):
        typer.echo(json.dumps({"prompt": text, "plain": before, "steered": after}))


@steer_app.command("eval")
@options_from("options", SteerEvalOptions)
@options_from("latent", LatentOptions)
@options_from("lineas", LineasOptions)
def evaluate(
    lineas: LineasOptions,
    latent: LatentOptions,
    options: SteerEvalOptions,
    out: Annotated[
        Path,
        typer.Option(callback=check.output_folder, help="run folder, e.g. runs/<name>/steering"),
    ],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="chat model spec"),
) -> None:
    """Concept rate (refusal judge) vs wiki perplexity for every method and strength."""
    from steering.evaluate import evaluate_steering

    table = evaluate_steering(
        options, lineas, latent, base=base, chat=chat, out=out, progress=typer.echo
    )
    typer.echo(table.to_string(index=False))


def register(app: typer.Typer) -> None:
    app.add_typer(steer_app, name="steer")
