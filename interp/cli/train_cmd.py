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

from crosscoders.train_options import StreamSpec, TrainOptions
from interp.cli import validators as check
from interp.cli.options import DEVICE_HELP, DeviceOption, options_from
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
# `auto` stays `auto` here: each data-parallel worker takes its own GPU
TrainDeviceOption = Annotated[
    str, typer.Option("--device", callback=check.device_or_auto, help=DEVICE_HELP)
]
WorkersOption = Annotated[
    int,
    typer.Option(
        callback=check.positive, help="data-parallel processes (relaunches under torchrun)"
    ),
]
OverwriteOption = Annotated[
    bool, typer.Option(help="replace a run with a different config in --out")
]
LogToOption = Annotated[
    str | None,
    typer.Option(help="also log to wandb (offline unless WANDB_MODE=online) or tensorboard"),
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
@options_from("training", TrainOptions)
def train_crosscoder(
    out: OutOption,
    training: TrainOptions,
    stream: dict[str, Any],
    cache: TrainCacheOption = None,
    device: TrainDeviceOption = "auto",
    workers: WorkersOption = 1,
    overwrite: OverwriteOption = False,
    log_to: LogToOption = None,
) -> None:
    """A crosscoder over every source of the cache or stream (all models x layers)."""
    from crosscoders.train_run import train_dictionary

    if workers > 1:
        relaunch_under_torchrun(workers)
    train_dictionary(
        training,
        out,
        cache=cache,
        stream=_stream_spec(stream),
        device=device,
        overwrite=overwrite,
        log_to=log_to,
    )


@train_app.command("sae")
@options_from("stream", StreamSpec, unset_is_none=True)
@options_from("training", TrainOptions)
def train_sae(
    out: OutOption,
    training: TrainOptions,
    stream: dict[str, Any],
    cache: TrainCacheOption = None,
    model: str = typer.Option("base", help="which model of the cache: its role (base | chat)"),
    layer: str | None = typer.Option(None, help="which cached layer (default: the only one)"),
    device: TrainDeviceOption = "auto",
    workers: WorkersOption = 1,
    overwrite: OverwriteOption = False,
    log_to: LogToOption = None,
) -> None:
    """An SAE (a one-source crosscoder) on one model and layer of the cache or stream."""
    from crosscoders.train_run import train_dictionary

    if workers > 1:
        relaunch_under_torchrun(workers)
    train_dictionary(
        training,
        out,
        cache=cache,
        stream=_stream_spec(stream),
        sae_source=(model, layer),
        device=device,
        overwrite=overwrite,
        log_to=log_to,
    )


@dict_app.command("eval")
def evaluate(
    dictionary: Annotated[Path, typer.Argument(help="dictionary folder (config.json + weights)")],
    cache: CacheOption,
    tokens: int = typer.Option(
        100_000, callback=check.positive, help="held-out cache tokens for FVE / L0 / dead / dense"
    ),
    batch_size: int = typer.Option(
        4096, callback=check.positive, help="tokens per evaluation batch"
    ),
    splice: bool = typer.Option(True, help="also measure splice-in CE / KL (loads the models)"),
    texts: int = typer.Option(
        64, callback=check.positive, help="how many texts for the splice-in loss"
    ),
    texts_file: Annotated[
        Path | None,
        typer.Option(
            callback=check.existing_file,
            help="splice-in texts, one per line (default: held-out wiki)",
        ),
    ] = None,
    ctx: int = typer.Option(128, callback=check.positive, help="tokens per splice-in text"),
    massive_ratio: float = typer.Option(
        5.0,
        callback=check.non_negative,
        help="FVE also without tokens of norm > this x the median (0: off)",
    ),
    device: DeviceOption = "auto",
) -> None:
    """Per-source FVE (all tokens and without massive-norm tokens), L0, dead and dense fractions
    on the cache's validation split, and the splice-in LM loss of each model; writes eval.json
    into the dictionary folder."""
    from crosscoders.evaluate import CacheBatches, reconstruction_metrics, splice_metrics
    from crosscoders.io import load_crosscoder
    from interp.cache import ActivationCache
    from interp.fileio import atomic_write_json
    from interp.models import load_model

    coder = load_crosscoder(dictionary, device)
    activation_cache = ActivationCache(cache)
    columns = _dictionary_columns(coder.config, activation_cache)
    batches = CacheBatches(activation_cache, columns, batch_size, max(1, tokens // batch_size))
    reconstruction = reconstruction_metrics(coder, batches, massive_ratio=massive_ratio)
    result: dict[str, object] = {"reconstruction": reconstruction}
    if splice:
        specs = [source.model for source in coder.config.sources]
        loaded = {spec: load_model(spec, device=device) for spec in dict.fromkeys(specs)}
        result["splice"] = splice_metrics(
            coder,
            [loaded[spec] for spec in specs],
            [source.layer for source in coder.config.sources],
            _splice_texts(texts_file)[:texts],
            max_length=ctx,
        )
    atomic_write_json(Path(dictionary) / "eval.json", result)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(_fve_summary(reconstruction))


def _fve_summary(reconstruction: dict) -> str:
    """One line per source: FVE over all tokens and over the typical (non-massive) ones."""
    n, n_massive = reconstruction["n_tokens"], reconstruction["n_massive_tokens"]
    ratio = reconstruction["massive_ratio"]
    lines = []
    for name, fve in reconstruction["fve"].items():
        line = f"FVE {name}: {fve:.3f} over all {n} tokens"
        if n_massive:
            line += (
                f"; {reconstruction['fve_typical'][name]:.3f} over the {n - n_massive} typical "
                f"ones ({n_massive} massive-norm token{'s' * (n_massive != 1)}, norm > "
                f"{ratio:g}x the median: {reconstruction['massive_error_share'][name]:.0%} of "
                "the squared error)"
            )
        elif ratio:
            line += f" (none of norm > {ratio:g}x the median)"
        lines.append(line)
    return "\n".join(lines)


def _splice_texts(texts_file: Path | None) -> list[str]:
    if texts_file is None:
        from interp.datasets import load_texts

        return load_texts("wiki", "heldout")
    return [line for line in texts_file.read_text().splitlines() if line.strip()]


def _dictionary_columns(config, cache) -> list[int]:
    """Which cache sources feed each dictionary source (matched by model spec and layer)."""
    available = [(spec, layer) for spec in cache.models for layer in cache.layers]
    columns = []
    for source in config.sources:
        if (source.model, source.layer) not in available:
            raise InterpError(
                f"the cache has no activations of {source.model!r} at layer {source.layer}: "
                f"expected one of {available}"
            )
        columns.append(available.index((source.model, source.layer)))
    if not columns:
        raise InterpError("the dictionary's config.json names no sources: cannot match a cache")
    return columns


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
