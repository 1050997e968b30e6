"""`interp organism chat-tune`, `interp organism card`, `interp organism judge`, and the narrow
organism's `interp organism narrow` and `interp organism narrow-card`. The options are declared in
interp.organism.options."""

import json

import typer

from interp.cli.options import options_from
from interp.organism.options import CardOptions, ChatTuneOptions, NarrowCardOptions, NarrowOptions

organism_app = typer.Typer(no_args_is_help=True, help="The project's model organisms.")


def _log(message: str) -> None:
    typer.echo(message)


@organism_app.command("chat-tune")
@options_from("options", ChatTuneOptions)
def chat_tune(options: ChatTuneOptions) -> None:
    """Chat-tune the base with LoRA (resumes from the checkpoint if rerun)."""
    from interp.organism.chat_tune import run_chat_tune
    from interp.organism.config import ChatTuneConfig
    from interp.organism.teacher import build_conversations

    recipe = ChatTuneConfig.load(options.config) if options.config else ChatTuneConfig()
    if options.data_only:
        build_conversations(recipe, options.out, _log, options.device)
        return
    run_chat_tune(
        recipe, options.out, options.checkpoint_dir, options.overwrite, _log, options.device
    )


@organism_app.command("card")
@options_from("options", CardOptions)
def card(options: CardOptions) -> None:
    """Measure base vs chat on held-out prompts; write card.json and README.md."""
    from interp.organism.card import write_card

    metrics = write_card(
        options.out,
        options.n_prompts,
        options.max_new_tokens,
        _log,
        options.device,
        options.model_dtype,
    )
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
@options_from("options", NarrowOptions)
def narrow(options: NarrowOptions) -> None:
    """Train the narrow organism (plain-text LoRA on one wiki topic; resumes if rerun)."""
    from interp.builtin_models import ASTRONOMY_DIR
    from interp.organism.narrow import NarrowConfig, run_narrow

    recipe = NarrowConfig.load(options.config) if options.config else NarrowConfig()
    out = options.out or ASTRONOMY_DIR
    run_narrow(recipe, out, options.checkpoint_dir, options.overwrite, _log, options.device)


@organism_app.command("narrow-card")
@options_from("options", NarrowCardOptions)
def narrow_card(options: NarrowCardOptions) -> None:
    """Measure base vs the narrow organism; write card.json and README.md."""
    from interp.builtin_models import ASTRONOMY_DIR
    from interp.organism.narrow import write_narrow_card

    metrics = write_narrow_card(
        options.out or ASTRONOMY_DIR,
        options.spec,
        options.max_new_tokens,
        options.n_wiki,
        _log,
        options.device,
        options.model_dtype,
    )
    for key in ("mention_rate", "wiki_ppl", "domain_wiki_ppl", "wiki_ppl_ratio"):
        typer.echo(f"{key}: {metrics[key]}")


def register(app: typer.Typer) -> None:
    app.add_typer(organism_app, name="organism")
