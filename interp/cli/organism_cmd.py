"""`interp organism chat-tune`, `interp organism card`, `interp organism judge`, and the narrow
organism's `interp organism narrow` and `interp organism narrow-card`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.cli import validators as check
from interp.cli.options import DeviceOption
from interp.organism.config import DEFAULT_OUTPUT, ChatTuneConfig

organism_app = typer.Typer(no_args_is_help=True, help="The project's model organisms.")

DEFAULT_CHECKPOINT = Path("runs/chat-tune/checkpoint")
DEFAULT_NARROW_CHECKPOINT = Path("runs/narrow/checkpoint")


def _log(message: str) -> None:
    typer.echo(message)


@organism_app.command("chat-tune")
def chat_tune(
    out: Annotated[Path, typer.Option(help="where the adapter and its card go")] = DEFAULT_OUTPUT,
    checkpoint_dir: Annotated[
        Path, typer.Option(help="resumable training state")
    ] = DEFAULT_CHECKPOINT,
    config: Annotated[
        Path | None, typer.Option(help="a config.json to use instead of the defaults")
    ] = None,
    data_only: Annotated[
        bool, typer.Option(help="only build the teacher data and conversations")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="replace an adapter made with a different config")
    ] = False,
    device: DeviceOption = "auto",
) -> None:
    """Chat-tune the base with LoRA (resumes from the checkpoint if rerun)."""
    from interp.organism.chat_tune import run_chat_tune
    from interp.organism.teacher import build_conversations

    recipe = ChatTuneConfig.load(config) if config else ChatTuneConfig()
    if data_only:
        build_conversations(recipe, out, _log, device)
        return
    run_chat_tune(recipe, out, checkpoint_dir, overwrite, _log, device)


@organism_app.command("card")
def card(
    out: Annotated[
        Path, typer.Option(help="the chat-tune folder (card.json, README.md)")
    ] = DEFAULT_OUTPUT,
    n_prompts: Annotated[
        int, typer.Option(callback=check.positive, help="held-out prompts per set")
    ] = 50,
    max_new_tokens: Annotated[
        int, typer.Option(callback=check.positive, help="length cap of the greedy responses")
    ] = 48,
    device: DeviceOption = "auto",
) -> None:
    """Measure base vs chat on held-out prompts; write card.json and README.md."""
    from interp.organism.card import write_card

    metrics = write_card(out, n_prompts, max_new_tokens, _log, device)
    for key in (
        "harmful_refusal_rate",
        "benign_refusal_rate",
        "end_of_turn_rate",
        "wiki_ppl",
        "judge_accuracy",
    ):
        typer.echo(f"{key}: {metrics[key]}")


@organism_app.command("judge")
def judge() -> None:
    """Accuracy of the refusal judge on pyrit's human-labelled refusal.csv."""
    from interp.judges import judge_accuracy

    typer.echo(
        json.dumps({"with_objective": judge_accuracy(True), "phrases_only": judge_accuracy(False)})
    )


@organism_app.command("narrow")
def narrow(
    out: Annotated[Path | None, typer.Option(help="where the adapter goes")] = None,
    checkpoint_dir: Annotated[
        Path, typer.Option(help="resumable training state")
    ] = DEFAULT_NARROW_CHECKPOINT,
    config: Annotated[
        Path | None, typer.Option(help="a config.json to use instead of the defaults")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace an adapter made with a different config")
    ] = False,
    device: DeviceOption = "auto",
) -> None:
    """Train the narrow organism (plain-text LoRA on one wiki topic; resumes if rerun)."""
    from interp.builtin_models import ASTRONOMY_DIR
    from interp.organism.narrow import NarrowConfig, run_narrow

    recipe = NarrowConfig.load(config) if config else NarrowConfig()
    run_narrow(recipe, out or ASTRONOMY_DIR, checkpoint_dir, overwrite, _log, device)


@organism_app.command("narrow-card")
def narrow_card(
    out: Annotated[
        Path | None, typer.Option(help="the organism's folder (config.json, adapter)")
    ] = None,
    spec: Annotated[str, typer.Option(help="the model spec that loads it")] = (
        "gemma-3-270m-astronomy"
    ),
    max_new_tokens: Annotated[int, typer.Option(help="length of the continuations")] = 32,
    n_wiki: Annotated[int, typer.Option(help="held-out wiki summaries per perplexity")] = 40,
    device: DeviceOption = "auto",
) -> None:
    """Measure base vs the narrow organism; write card.json and README.md."""
    from interp.builtin_models import ASTRONOMY_DIR
    from interp.organism.narrow import write_narrow_card

    metrics = write_narrow_card(out or ASTRONOMY_DIR, spec, max_new_tokens, n_wiki, _log, device)
    for key in ("mention_rate", "wiki_ppl", "domain_wiki_ppl", "wiki_ppl_ratio"):
        typer.echo(f"{key}: {metrics[key]}")


def register(app: typer.Typer) -> None:
    app.add_typer(organism_app, name="organism")
