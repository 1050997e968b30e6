"""`interp train crosscoder|sae` (dictionaries from an activation cache) and
`interp dict eval|export` (evaluate a trained dictionary, export a source to SAELens).

Data-parallel training: `torchrun --standalone --nproc_per_node=N -m interp.cli.main train ...`
or `--workers N`, which relaunches the command that way.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from interp.cli import validators as check
from interp.cli.torchrun import relaunch_under_torchrun
from interp.errors import InterpError

if TYPE_CHECKING:
    from crosscoders.config import Source
    from crosscoders.model_stream import StreamSpec

train_app = typer.Typer(no_args_is_help=True, help="Train sparse dictionaries on a cache.")
dict_app = typer.Typer(no_args_is_help=True, help="Evaluate and export trained dictionaries.")

CacheOption = Annotated[Path, typer.Option("--cache", help="activation cache folder")]
TrainCacheOption = Annotated[
    Path | None, typer.Option("--cache", help="activation cache folder (or stream: --base ...)")
]
# The stream options: train from the models with no cache (crosscoders.model_stream.StreamSpec)
BaseOption = Annotated[str | None, typer.Option("--base", help="stream: base model spec")]
ChatOption = Annotated[str | None, typer.Option("--chat", help="stream: chat model spec")]
LayersOption = Annotated[str | None, typer.Option(help="stream: layers (default 0.5)")]
MixOption = Annotated[
    str | None,
    typer.Option(
        callback=check.mixture, help="stream: dataset mixture (default wiki:0.5,chat:0.5)"
    ),
]
TokensOption = Annotated[
    int | None,
    typer.Option(
        callback=check.positive, help="stream: tokens of the plan (default steps x batch size)"
    ),
]
CtxOption = Annotated[
    int | None, typer.Option("--ctx", callback=check.positive, help="stream: context length (128)")
]
ForwardBatchOption = Annotated[
    int | None, typer.Option(callback=check.positive, help="stream: sequences per forward pass (8)")
]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        callback=check.storage_dtype,
        help="stream: activation dtype, as a cache's (bf16)",
    ),
]
ModelDtypeOption = Annotated[str | None, typer.Option(help="stream: model dtype (fp32)")]
BufferOption = Annotated[
    int | None,
    typer.Option(
        callback=check.non_negative, help="stream: shuffle buffer in batches (32; 0 = plan order)"
    ),
]
SplitOption = Annotated[str | None, typer.Option(help="stream: dataset split (train)")]
OutOption = Annotated[
    Path,
    typer.Option("--out", callback=check.output_folder, help="output folder (rerun to resume)"),
]


def _stream_spec(**options: object) -> "StreamSpec | None":
    """The stream options given, or None if none was."""
    from crosscoders.model_stream import StreamSpec

    given = {name: value for name, value in options.items() if value is not None}
    if not given:
        return None
    if "base" not in given or "chat" not in given:
        raise InterpError("streaming needs both --base and --chat (the pair's model specs)")
    return StreamSpec(**given)  # type: ignore[arg-type]


def _train(
    cache_path: Path | None,
    out: Path,
    sources: list[int] | None,
    dict_size: int,
    k: int,
    activation: str,
    l1_coefficient: float,
    steps: int | None,
    batch_size: int,
    lr: float,
    warmup_steps: int,
    threshold_start_step: int,
    dead_after_tokens: int,
    decoder_init_norm: float | None,
    seed: int,
    log_every: int,
    checkpoint_every: int,
    device: str,
    overwrite: bool,
    stream_spec: "StreamSpec | None" = None,
    sae_source: tuple[str, str | None] | None = None,
    log_to: str | None = None,
) -> None:
    from crosscoders import ddp
    from crosscoders.config import CrossCoderConfig, TrainingConfig
    from crosscoders.streams import cache_stream
    from crosscoders.trainer import Trainer
    from interp.cache import ActivationCache

    if (cache_path is None) == (stream_spec is None):
        raise InterpError(
            "pass either --cache DIR or the stream options (--base, --chat, --layers, --mix, "
            f"--tokens, ...), {'not both' if cache_path is not None else 'one of them'}"
        )
    rank_device = ddp.init_from_env()
    run_device = rank_device if device == "auto" else device
    if stream_spec is not None:
        _train_streamed(stream_spec, out, sae_source, dict_size, k, activation,
                        l1_coefficient, steps, batch_size, lr, warmup_steps, threshold_start_step,
                        dead_after_tokens, decoder_init_norm, seed, log_every, checkpoint_every,
                        run_device, overwrite, log_to)  # fmt: skip
        return
    assert cache_path is not None
    if sae_source is not None:
        sources = _source_columns(cache_path, *sae_source)
    cache = ActivationCache(cache_path)
    columns = list(range(cache.n_sources)) if sources is None else sources
    origins = _origins(cache.models, cache.roles, cache.layers)
    if steps is None:
        steps = cache.n_split_tokens("train") // batch_size
    coder_config = CrossCoderConfig(
        n_sources=len(columns),
        d_model=cache.d_model,
        dict_size=dict_size,
        activation=activation,
        k=k,
        l1_coefficient=l1_coefficient,
        threshold_start_step=threshold_start_step,
        decoder_init_norm=decoder_init_norm
        if decoder_init_norm is not None
        else (0.005 if activation == "relu_l1" else 1.0),
        sources=[origins[c] for c in columns],
    )
    training = TrainingConfig(
        n_steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        dead_after_tokens=dead_after_tokens,
        seed=seed,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
    )
    is_main = ddp.rank() == 0
    try:
        stream = cache_stream(cache, batch_size, seed=seed, split="train", sources=columns)
        Trainer(
            coder_config, training, stream, out, run_device, overwrite=overwrite, log_to=log_to
        ).train()
    finally:
        ddp.shutdown()
    if is_main:
        typer.echo(f"dictionary written to {out}")


def _origins(models: list[str], roles: list[str], layers: list[int]) -> list["Source"]:
    """Provenance of each source of the sources axis (model-major)."""
    from crosscoders.config import Source

    return [
        Source(model=spec, layer=layer, name=role if len(layers) == 1 else f"{role}/{layer}")
        for spec, role in zip(models, roles, strict=True)
        for layer in layers
    ]


def _train_streamed(
    spec: "StreamSpec",
    out: Path,
    sae_source: tuple[str, str | None] | None,
    dict_size: int,
    k: int,
    activation: str,
    l1_coefficient: float,
    steps: int | None,
    batch_size: int,
    lr: float,
    warmup_steps: int,
    threshold_start_step: int,
    dead_after_tokens: int,
    decoder_init_norm: float | None,
    seed: int,
    log_every: int,
    checkpoint_every: int,
    device: object,
    overwrite: bool,
    log_to: str | None = None,
) -> None:
    """Train from the models (crosscoders.model_stream): no cache anywhere; `stream.json` beside
    the weights records what the run used."""
    import time

    from crosscoders import ddp
    from crosscoders.config import CrossCoderConfig, TrainingConfig
    from crosscoders.model_stream import (
        model_stream,
        open_model_stream,
        stream_identity,
        stream_record,
        write_stream_record,
    )
    from crosscoders.trainer import Trainer
    from interp.cache.reader import source_column
    from interp.cache.writer import ROLES
    from interp.layers import resolve_layer

    try:
        if ddp.world_size() > 1:
            raise InterpError(
                "--workers > 1 with a stream is not supported yet (each rank would run the "
                "whole forward): train from a cache, or stream with one worker"
            )
        started = time.perf_counter()
        pair, config = open_model_stream(spec, batch_size, seed, device, steps)
        layers = list(config.layers)
        columns = None
        if sae_source is not None:
            role, layer = sae_source
            if role not in ROLES:
                raise InterpError(f"unknown model {role!r}: the stream holds {list(ROLES)}")
            if layer is None and len(layers) != 1:
                raise InterpError(f"the stream holds layers {layers}: pass --layer")
            index = layers[0] if layer is None else resolve_layer(layer, pair.n_layers)
            if index not in layers:
                raise InterpError(f"layer {layer!r} is not streamed: expected one of {layers}")
            columns = [source_column(ROLES, layers, role, index)]
        stream = model_stream(pair, config, batch_size, spec.buffer_batches, seed, sources=columns)
        origins = _origins([pair.base.spec, pair.chat.spec], list(ROLES), layers)
        coder_config = CrossCoderConfig(
            n_sources=len(stream.columns),
            d_model=pair.d_model,
            dict_size=dict_size,
            activation=activation,
            k=k,
            l1_coefficient=l1_coefficient,
            threshold_start_step=threshold_start_step,
            decoder_init_norm=decoder_init_norm
            if decoder_init_norm is not None
            else (0.005 if activation == "relu_l1" else 1.0),
            sources=[origins[c] for c in stream.columns],
        )
        training = TrainingConfig(
            n_steps=steps if steps is not None else stream.per_epoch,
            batch_size=batch_size,
            lr=lr,
            warmup_steps=warmup_steps,
            dead_after_tokens=dead_after_tokens,
            seed=seed,
            log_every=log_every,
            checkpoint_every=checkpoint_every,
        )
        record = stream_record(stream, spec.model_dtype)
        trainer = Trainer(
            coder_config, training, stream, out, device, overwrite=overwrite,
            data=stream_identity(record), log_to=log_to,
        )  # fmt: skip
        write_stream_record(
            out,
            record,
            trainer.coder.input_scale,
            training.init_sample_tokens,
            training.normalize_inputs,
        )
        trainer.train()
    finally:
        ddp.shutdown()
    elapsed = time.perf_counter() - started
    typer.echo(
        f"dictionary written to {out} ({training.n_steps} steps of {batch_size} tokens from a "
        f"{config.n_tokens}-token plan streamed from the models, {elapsed:.1f} s, no cache)"
    )


def _source_columns(cache_path: Path, model: str, layer: str | None) -> list[int]:
    from interp.cache import ActivationCache
    from interp.layers import resolve_layer

    cache = ActivationCache(cache_path)
    roles = cache.roles
    if model not in roles:
        raise InterpError(f"unknown model {model!r}: the cache holds {roles}")
    if layer is None:
        if len(cache.layers) != 1:
            raise InterpError(f"the cache holds layers {cache.layers}: pass --layer")
        layer_index = cache.layers[0]
    else:
        layer_index = resolve_layer(layer, int(cache.manifest["models"][0]["n_layers"]))
    if layer_index not in cache.layers:
        raise InterpError(f"layer {layer!r} is not in the cache: expected one of {cache.layers}")
    return [cache.source_column(model, layer_index)]


@train_app.command("crosscoder")
def train_crosscoder(
    out: OutOption,
    cache: TrainCacheOption = None,
    dict_size: int = typer.Option(..., callback=check.positive, help="number of latents F"),
    k: int = typer.Option(
        100, callback=check.positive, help="latents per token (topk / batchtopk)"
    ),
    activation: str = typer.Option("batchtopk", help="batchtopk | topk | relu_l1"),
    l1_coefficient: float = typer.Option(
        0.041, callback=check.non_negative, help="relu_l1 penalty mu (the paper's 0.041)"
    ),
    steps: int | None = typer.Option(
        None, callback=check.positive, help="optimizer steps (default: one epoch)"
    ),
    batch_size: int = typer.Option(2048, callback=check.positive, help="global batch in tokens"),
    lr: float = typer.Option(1e-4, callback=check.positive, help="Adam learning rate"),
    warmup_steps: int = typer.Option(
        1000, callback=check.non_negative, help="linear lr warm-up steps"
    ),
    threshold_start_step: int = typer.Option(
        1000, callback=check.non_negative, help="batchtopk: steps before theta is learned"
    ),
    dead_after_tokens: int = typer.Option(
        10_000_000, callback=check.positive, help="tokens without firing = dead"
    ),
    decoder_init_norm: float | None = typer.Option(
        None, callback=check.positive, help="default 1.0, relu_l1 0.005"
    ),
    seed: int = typer.Option(0, help="seed of init and data order"),
    log_every: int = typer.Option(50, callback=check.positive, help="steps between log lines"),
    checkpoint_every: int = typer.Option(
        1000, callback=check.positive, help="steps between checkpoints"
    ),
    device: str = typer.Option(
        "auto", callback=check.device_or_auto, help="auto (cuda if available), cpu, cuda:0, ..."
    ),
    workers: int = typer.Option(
        1, callback=check.positive, help="data-parallel processes (relaunches under torchrun)"
    ),
    overwrite: bool = typer.Option(False, help="replace a run with a different config in --out"),
    log_to: str | None = typer.Option(
        None, help="also log to wandb (offline unless WANDB_MODE=online) or tensorboard"
    ),
    base: BaseOption = None,
    chat: ChatOption = None,
    layers: LayersOption = None,
    mix: MixOption = None,
    tokens: TokensOption = None,
    ctx: CtxOption = None,
    forward_batch: ForwardBatchOption = None,
    dtype: DtypeOption = None,
    model_dtype: ModelDtypeOption = None,
    buffer_batches: BufferOption = None,
    split: SplitOption = None,
) -> None:
    """A crosscoder over every source of the cache or stream (all models x layers)."""
    if workers > 1:
        relaunch_under_torchrun(workers)
    _train(
        cache,
        out,
        None,
        dict_size,
        k,
        activation,
        l1_coefficient,
        steps,
        batch_size,
        lr,
        warmup_steps,
        threshold_start_step,
        dead_after_tokens,
        decoder_init_norm,
        seed,
        log_every,
        checkpoint_every,
        device,
        overwrite,
        stream_spec=_stream_spec(
            base=base,
            chat=chat,
            layers=layers,
            mix=mix,
            tokens=tokens,
            ctx=ctx,
            forward_batch=forward_batch,
            dtype=dtype,
            model_dtype=model_dtype,
            buffer_batches=buffer_batches,
            split=split,
        ),
        log_to=log_to,
    )


@train_app.command("sae")
def train_sae(
    out: OutOption,
    cache: TrainCacheOption = None,
    dict_size: int = typer.Option(..., callback=check.positive, help="number of latents F"),
    model: str = typer.Option("base", help="which model of the cache: its role (base | chat)"),
    layer: str | None = typer.Option(None, help="which cached layer (default: the only one)"),
    k: int = typer.Option(
        100, callback=check.positive, help="latents per token (topk / batchtopk)"
    ),
    activation: str = typer.Option("batchtopk", help="batchtopk | topk | relu_l1"),
    l1_coefficient: float = typer.Option(
        0.041, callback=check.non_negative, help="relu_l1 penalty mu (the paper's 0.041)"
    ),
    steps: int | None = typer.Option(
        None, callback=check.positive, help="optimizer steps (default: one epoch)"
    ),
    batch_size: int = typer.Option(2048, callback=check.positive, help="global batch in tokens"),
    lr: float = typer.Option(1e-4, callback=check.positive, help="Adam learning rate"),
    warmup_steps: int = typer.Option(
        1000, callback=check.non_negative, help="linear lr warm-up steps"
    ),
    threshold_start_step: int = typer.Option(
        1000, callback=check.non_negative, help="batchtopk: steps before theta is learned"
    ),
    dead_after_tokens: int = typer.Option(
        10_000_000, callback=check.positive, help="tokens without firing = dead"
    ),
    decoder_init_norm: float | None = typer.Option(
        None, callback=check.positive, help="default 1.0, relu_l1 0.005"
    ),
    seed: int = typer.Option(0, help="seed of init and data order"),
    log_every: int = typer.Option(50, callback=check.positive, help="steps between log lines"),
    checkpoint_every: int = typer.Option(
        1000, callback=check.positive, help="steps between checkpoints"
    ),
    device: str = typer.Option(
        "auto", callback=check.device_or_auto, help="auto (cuda if available), cpu, cuda:0, ..."
    ),
    workers: int = typer.Option(
        1, callback=check.positive, help="data-parallel processes (relaunches under torchrun)"
    ),
    overwrite: bool = typer.Option(False, help="replace a run with a different config in --out"),
    log_to: str | None = typer.Option(
        None, help="also log to wandb (offline unless WANDB_MODE=online) or tensorboard"
    ),
    base: BaseOption = None,
    chat: ChatOption = None,
    layers: LayersOption = None,
    mix: MixOption = None,
    tokens: TokensOption = None,
    ctx: CtxOption = None,
    forward_batch: ForwardBatchOption = None,
    dtype: DtypeOption = None,
    model_dtype: ModelDtypeOption = None,
    buffer_batches: BufferOption = None,
    split: SplitOption = None,
) -> None:
    """An SAE (a one-source crosscoder) on one model and layer of the cache or stream."""
    if workers > 1:
        relaunch_under_torchrun(workers)
    _train(
        cache,
        out,
        None,
        dict_size,
        k,
        activation,
        l1_coefficient,
        steps,
        batch_size,
        lr,
        warmup_steps,
        threshold_start_step,
        dead_after_tokens,
        decoder_init_norm,
        seed,
        log_every,
        checkpoint_every,
        device,
        overwrite,
        stream_spec=_stream_spec(
            base=base,
            chat=chat,
            layers=layers,
            mix=mix,
            tokens=tokens,
            ctx=ctx,
            forward_batch=forward_batch,
            dtype=dtype,
            model_dtype=model_dtype,
            buffer_batches=buffer_batches,
            split=split,
        ),
        sae_source=(model, layer),
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
    max_length: int = typer.Option(128, callback=check.positive, help="tokens per splice-in text"),
    massive_ratio: float = typer.Option(
        5.0,
        callback=check.non_negative,
        help="FVE also without tokens of norm > this x the median (0: off)",
    ),
    device: str = typer.Option("cpu", callback=check.device, help="cpu, cuda, ..."),
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
            max_length=max_length,
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
