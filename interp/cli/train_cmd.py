"""`interp train crosscoder|sae` (dictionaries from an activation cache or streamed from the
models) and `interp dict eval|export|import` (evaluate, export, import a dictionary). The
training options are declared once, in crosscoders.train_options (TrainOptions, StreamSpec).

Data-parallel training: `torchrun --standalone --nproc_per_node=N -m interp.cli.main train ...`
or `--workers N`, which relaunches the command that way.
"""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from crosscoders.eval_run import EvalOptions
from crosscoders.train_options import SaeSourceOptions, StreamSpec, TrainControls, TrainOptions
from interp.cli import validators as check
from interp.cli.options import options_from
from interp.cli.torchrun import relaunch_under_torchrun
from interp.command_options import DictExportOptions, DictImportOptions
from interp.errors import InterpError

train_app = typer.Typer(no_args_is_help=True, help="Train sparse dictionaries on a cache.")
dict_app = typer.Typer(no_args_is_help=True, help="Evaluate and export trained dictionaries.")

CacheOption = Annotated[Path, typer.Option("--cache", help="activation cache folder")]
TrainCacheOption = Annotated[
    Path | None, typer.Option("--cache", help="activation cache folder (or stream: --base ...)")
]
OutOption = Annotated[
    Path,
    typer.Option("--out", callback=check.output_folder, help="output folder (rerun to resume)"),
]


def _stream_spec(given: dict[str, Any]) -> StreamSpec | None:
    """The stream options given, or None if none was."""
    if not given:
        return None
    if "base" not in given or "chat" not in given:
        raise InterpError("streaming needs both --base and --chat (the pair's model specs)")
    return StreamSpec(**given)


@train_app.command("crosscoder")
@options_from("stream", StreamSpec, unset_is_none=True)
@options_from("controls", TrainControls)
@options_from("training", TrainOptions)
def train_crosscoder(
    out: OutOption,
    training: TrainOptions,
    controls: TrainControls,
    stream: dict[str, Any],
    cache: TrainCacheOption = None,
) -> None:
    """A crosscoder over every source of the cache or stream (all models x layers)."""
    _train(training, controls, out, cache, _stream_spec(stream), None)


@train_app.command("sae")
@options_from("stream", StreamSpec, unset_is_none=True)
@options_from("sae", SaeSourceOptions)
@options_from("controls", TrainControls)
@options_from("training", TrainOptions)
def train_sae(
    out: OutOption,
    training: TrainOptions,
    controls: TrainControls,
    sae: SaeSourceOptions,
    stream: dict[str, Any],
    cache: TrainCacheOption = None,
) -> None:
    """An SAE (a one-source crosscoder) on one model and layer of the cache or stream."""
    _train(training, controls, out, cache, _stream_spec(stream), sae)


def _train(
    training: TrainOptions,
    controls: TrainControls,
    out: Path,
    cache: Path | None,
    stream: StreamSpec | None,
    sae: SaeSourceOptions | None,
) -> None:
    from crosscoders.train_run import train_step

    if controls.workers > 1:
        relaunch_under_torchrun(controls.workers)
    train_step(training, controls, sae, out=out, cache=cache, stream=stream)


@dict_app.command("eval")
@options_from("options", EvalOptions)
def evaluate(
    dictionary: Annotated[Path, typer.Argument(help="dictionary folder (config.json + weights)")],
    cache: CacheOption,
    options: EvalOptions,
) -> None:
    """Per-source FVE (all tokens and without massive-norm tokens), L0, dead and dense fractions
    on the cache's validation split, and the splice-in LM loss of each model; writes eval.json
    into the dictionary folder."""
    from crosscoders.eval_run import evaluate_dictionary, fve_summary

    result = evaluate_dictionary(options, dictionary=dictionary, cache=cache)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(fve_summary(result["reconstruction"]))


@dict_app.command("export")
@options_from("options", DictExportOptions)
def export(
    dictionary: Annotated[Path, typer.Argument(help="dictionary folder")],
    options: DictExportOptions,
) -> None:
    """Export one source as a SAELens 6 folder (cfg.json + sae_weights.safetensors)."""
    from crosscoders.export_saelens import export_dictionary

    folder = export_dictionary(options, dictionary)
    typer.echo(f"SAELens folder written to {folder}")


@dict_app.command("import")
@options_from("options", DictImportOptions)
def import_dictionary(
    path: Annotated[Path, typer.Argument(help="a SAELens folder, or a dictionary_learning save")],
    options: DictImportOptions,
) -> None:
    """Import a dictionary: a SAELens folder (cfg.json + sae_weights.safetensors) or a crosscoder
    saved by dictionary_learning / crosscoder_learning (model.safetensors + config.json, or .pt)."""
    from crosscoders.import_dictionary_learning import import_dictionary

    config = import_dictionary(options, path).config
    typer.echo(
        f"dictionary written to {options.out} ({config.activation}, {config.n_sources} "
        f"source(s), {config.dict_size} latents)"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.add_typer(dict_app, name="dict")
