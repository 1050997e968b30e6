"""`interp weights`, `interp horizon`, `interp amplify`: diffing beyond activations, in the
weights and in the outputs (crosscoders.diffing.{weights, horizon, amplify}). This layer only
parses and calls."""

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.diffing_cmd import floats, load_pair_of
from interp.cli.options import DeviceOption
from interp.errors import InterpError


def _identity(**specs: str) -> dict[str, str]:
    from interp.builtin_models import weights_identity

    return {role: spec for role, spec in specs.items()} | {
        f"{role}_weights": weights_identity(spec) for role, spec in specs.items()
    }


def weights(
    out: Annotated[
        Path,
        typer.Option("--out", callback=check.output_folder, help="results folder (RUN/weights)"),
    ],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="fine-tuned model spec (merged weights)"),
    adapter: str = typer.Option("", help="a LoRA adapter folder: read unmerged instead of --chat"),
    intruder_k: int = typer.Option(10, callback=check.positive, help="top-k singular vectors"),
    epsilon: float = typer.Option(0.5, callback=check.positive, help="intruder cosine threshold"),
    top_r: int = typer.Option(8, callback=check.positive, help="energy share in the top r"),
    device: DeviceOption = "auto",
    overwrite: bool = typer.Option(False, help="replace results of another config"),
) -> None:
    """Spectrum of every weight change dW = W_chat - W_base (rank, effective rank, energy in the
    top singular values) and intruder dimensions per layer and module."""
    from crosscoders.diffing.weights import WeightsConfig, read_adapter, run_weights
    from interp.models import load_model

    config = WeightsConfig(intruder_k=intruder_k, epsilon=epsilon, top_r=top_r)
    config.validate()
    if adapter:
        read_adapter(Path(adapter))  # a bad folder fails before the model loads
        loaded = load_model(base, device=device)
        identity = _identity(base=base) | {"adapter": str(adapter)}
        summary = run_weights(
            out,
            loaded.model,
            adapter=Path(adapter),
            config=config,
            identity=identity,
            force=overwrite,
        )
    else:
        pair = load_pair_of(base, chat, "float32", device)
        summary = run_weights(
            out,
            pair.base.model,
            chat=pair.chat.model,
            config=config,
            identity=_identity(base=base, chat=chat),
            force=overwrite,
        )
    summary.pop("unchanged", None)
    summary.pop("by_module", None)
    summary.pop("intruders_by_layer", None)
    typer.echo(json.dumps({"out": str(out), **summary}))


def horizon(
    out: Annotated[
        Path,
        typer.Option("--out", callback=check.output_folder, help="results folder (RUN/horizon)"),
    ],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="fine-tuned model spec"),
    recipe: str = typer.Option("chat-benign", help="dataset recipe of the prompts (heldout)"),
    n_prompts: int = typer.Option(16, callback=check.positive, help="prompts"),
    max_new_tokens: int = typer.Option(32, callback=check.positive, help="tokens generated"),
    first_k: int = typer.Option(4, callback=check.positive, help="'first' response tokens"),
    sample: bool = typer.Option(False, help="sample at temperature 1 instead of greedy"),
    seed: int = typer.Option(0, help="sampling seed"),
    batch_size: int = typer.Option(16, callback=check.positive, help="prompts per batch"),
    dtype: str = typer.Option(
        "float32", callback=check.model_dtype, help="model dtype: fp32 or bf16 (float32, bfloat16)"
    ),
    device: DeviceOption = "auto",
    overwrite: bool = typer.Option(False, help="replace results of another config"),
) -> None:
    """Entropy and branching factor (exp entropy) of base and chat along both models'
    generations, by position class (template, prompt, first response tokens, later)."""
    from crosscoders.diffing.horizon import HorizonConfig, run_horizon
    from interp.datasets import load_texts

    config = HorizonConfig(max_new_tokens, first_k, sample, seed, batch_size)
    config.validate()
    prompts = load_texts(recipe, "heldout")[:n_prompts]
    if not prompts:
        raise InterpError(f"recipe {recipe!r} has no held-out texts: expected prompts")
    pair = load_pair_of(base, chat, dtype, device)
    identity = _identity(base=base, chat=chat) | {"recipe": recipe}
    summary = run_horizon(pair, prompts, out, config, identity=identity, force=overwrite)
    typer.echo(json.dumps({"out": str(out), **summary}))


def amplify(
    out: Annotated[
        Path,
        typer.Option(
            "--out", callback=check.output_folder, help="results folder (RUN/amplification)"
        ),
    ],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="fine-tuned model spec"),
    alphas: str = typer.Option("2,4", help="alphas (0 and 1 are always added)"),
    n_prompts: int = typer.Option(12, callback=check.positive, help="neutral prompts"),
    max_new_tokens: int = typer.Option(32, callback=check.positive, help="greedy tokens"),
    dtype: str = typer.Option(
        "float32", callback=check.model_dtype, help="model dtype: fp32 or bf16 (float32, bfloat16)"
    ),
    device: DeviceOption = "auto",
    overwrite: bool = typer.Option(False, help="replace results of another config"),
) -> None:
    """Greedy generations on neutral prompts from logits_base + alpha (logits_chat -
    logits_base) (emulated fine-tuning / proxy-tuning / diff amplification)."""
    from crosscoders.diffing.amplify import AmplifyConfig, run_amplify

    config = AmplifyConfig(floats(alphas, "--alphas"), n_prompts, max_new_tokens)
    config.validate()
    pair = load_pair_of(base, chat, dtype, device)
    rows = run_amplify(pair, out, config, identity=_identity(base=base, chat=chat), force=overwrite)
    typer.echo(
        json.dumps(
            {
                "out": str(out),
                "alphas": [row["alpha"] for row in rows],
                "seconds": [row["seconds"] for row in rows],
            }
        )
    )


def register(app: typer.Typer) -> None:
    app.command("weights")(weights)
    app.command("horizon")(horizon)
    app.command("amplify")(amplify)
