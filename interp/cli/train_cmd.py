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
def export(
    dictionary: Annotated[Path, typer.Argument(help="dictionary folder")],
    out: OutOption,
    source: str = typer.Option(
        "0", help="which source: its name (base, chat; base/9 with several layers) or index"
    ),
    cache: Annotated[
        Path | None,
        typer.Option(help="the dictionary's activation cache: its ctx is cfg.json's context_size"),
    ] = None,
    context_size: int | None = typer.Option(
        None, callback=check.positive, help="context size for cfg.json (or --cache)"
    ),
) -> None:
    """Export one source as a SAELens 6 folder (cfg.json + sae_weights.safetensors)."""
    from crosscoders.export_saelens import export_saelens
    from crosscoders.io import load_crosscoder

    if (cache is None) == (context_size is None):
        raise InterpError(
            "give exactly one of --cache (the dictionary's activation cache, whose ctx is used) "
            "and --context-size"
        )
    if cache is not None:
        from interp.cache.manifest import read_manifest

        context_size = int(read_manifest(cache)["config"]["ctx"])
    coder = load_crosscoder(dictionary)
    folder = export_saelens(coder, source_index(coder.config, source), out, context_size)
    typer.echo(f"SAELens folder written to {folder}")


def source_index(config, source: str) -> int:
    """`--source`: a source's name (as in config.json: `chat`, or `chat/9` for a crosscoder over
    several layers) or its index."""
    names = [entry.name for entry in config.sources]
    if source in names:
        return names.index(source)
    if source.isdigit() and int(source) < config.n_sources:
        return int(source)
    raise InterpError(
        f"unknown source {source!r}: expected one of {names} or an index 0..{config.n_sources - 1}"
    )


@dict_app.command("import")
def import_dictionary(
    path: Annotated[Path, typer.Argument(help="a SAELens folder, or a dictionary_learning save")],
    out: OutOption,
    model: Annotated[
        list[str] | None,
        typer.Option(help="dictionary_learning: the model of each layer, in order (base, chat)"),
    ] = None,
    layer: Annotated[
        int | None, typer.Option(help="dictionary_learning: the resid_post layer they read")
    ] = None,
) -> None:
    """Import a dictionary: a SAELens folder (cfg.json + sae_weights.safetensors) or a crosscoder
    saved by dictionary_learning / crosscoder_learning (model.safetensors + config.json, or .pt)."""
    from crosscoders.config import Source
    from crosscoders.export_saelens import CFG_FILE, import_saelens
    from crosscoders.import_dictionary_learning import import_dictionary_learning
    from crosscoders.io import save_crosscoder

    if (path / CFG_FILE).is_file():
        coder = import_saelens(path)
    else:
        if not model or layer is None:
            raise InterpError(
                "a dictionary_learning save records no models or layer: give --model once per "
                "crosscoder layer (base first) and --layer"
            )
        names = ["base", "chat"] if len(model) == 2 else [""] * len(model)
        sources = [Source(spec, layer, name) for spec, name in zip(model, names, strict=True)]
        coder = import_dictionary_learning(path, sources)
    save_crosscoder(coder, out)
    config = coder.config
    typer.echo(
        f"dictionary written to {out} ({config.activation}, {config.n_sources} source(s), "
        f"{config.dict_size} latents)"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.add_typer(dict_app, name="dict")
