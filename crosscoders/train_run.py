"""Train one dictionary from an activation cache or streamed from the models: what
`interp train crosscoder|sae` and a pipeline's [train.NAME] step run, with the options of
crosscoders.train_options.TrainOptions."""

import time
from pathlib import Path

from crosscoders import ddp
from crosscoders.config import Source
from crosscoders.train_options import SaeSourceOptions, StreamSpec, TrainControls, TrainOptions
from interp.errors import InterpError

SaeSource = tuple[str, str | None]  # an SAE's model role and layer (None: the only one)


def train_dictionary(
    options: TrainOptions,
    out: Path,
    *,
    cache: Path | None = None,
    stream: StreamSpec | None = None,
    sae_source: SaeSource | None = None,
    device: str = "auto",
    overwrite: bool = False,
    log_to: str | None = None,
) -> None:
    """A crosscoder over every source of the cache or stream, or with `sae_source` an SAE on one
    of them, written to `out` (a rerun resumes; a different config is refused unless
    `overwrite`). `device` "auto": this data-parallel rank's device."""
    if (cache is None) == (stream is None):
        raise InterpError(
            "pass either --cache DIR or the stream options (--base, --chat, --layers, --mix, "
            f"--tokens, ...), {'not both' if cache is not None else 'one of them'}"
        )
    rank_device = ddp.init_from_env()
    run_device = rank_device if device == "auto" else device
    if stream is not None:
        _train_streamed(options, stream, out, sae_source, run_device, overwrite, log_to)
        return
    assert cache is not None
    _train_from_cache(options, cache, out, sae_source, run_device, overwrite, log_to)


def train_step(
    training: TrainOptions,
    controls: TrainControls,
    sae: SaeSourceOptions | None = None,
    *,
    out: Path,
    cache: Path | None = None,
    stream: StreamSpec | None = None,
) -> None:
    """`interp train crosscoder|sae` and a pipeline's [train.NAME] step, from their options:
    an SAE when `sae` names its source, else a crosscoder (train_dictionary)."""
    train_dictionary(
        training,
        out,
        cache=cache,
        stream=stream,
        sae_source=(sae.model, sae.layer) if sae is not None else None,
        device=controls.device,
        overwrite=controls.overwrite,
        log_to=controls.log_to,
    )


def train_streamed_step(
    training: TrainOptions,
    controls: TrainControls,
    *sources: SaeSourceOptions | StreamSpec,
    out: Path,
) -> None:
    """A pipeline [train.NAME] step with source = "stream": its options dataclasses are
    TrainOptions, TrainControls, [SaeSourceOptions for an SAE,] StreamSpec (train_step)."""
    *sae, stream = sources
    train_step(training, controls, *sae, out=out, stream=stream)


def _train_from_cache(
    options: TrainOptions,
    cache_path: Path,
    out: Path,
    sae_source: SaeSource | None,
    device: object,
    overwrite: bool,
    log_to: str | None,
) -> None:
    from crosscoders.streams import cache_stream
    from crosscoders.trainer import Trainer
    from interp.cache import ActivationCache

    cache = ActivationCache(cache_path)
    if sae_source is None:
        columns = list(range(cache.n_sources))
    else:
        columns = _source_columns(cache, *sae_source)
    roles = [model["role"] for model in cache.manifest["models"]]
    origins = _origins(cache.models, roles, cache.layers)
    steps = options.steps
    if steps is None:
        steps = cache.n_split_tokens("train") // options.batch_size
    coder_config = options.coder_config(steps, cache.d_model, [origins[c] for c in columns])
    training = options.training_config(steps)
    is_main = ddp.rank() == 0
    try:
        stream = cache_stream(
            cache, options.batch_size, seed=options.seed, split="train", sources=columns
        )
        Trainer(
            coder_config, training, stream, out, device, overwrite=overwrite, log_to=log_to
        ).train()
    finally:
        ddp.shutdown()
    if is_main:
        print(f"dictionary written to {out}", flush=True)


def _origins(models: list[str], roles: list[str], layers: list[int]) -> list[Source]:
    """Provenance of each source of the sources axis (model-major)."""
    return [
        Source(model=spec, layer=layer, name=role if len(layers) == 1 else f"{role}/{layer}")
        for spec, role in zip(models, roles, strict=True)
        for layer in layers
    ]


def _train_streamed(
    options: TrainOptions,
    spec: StreamSpec,
    out: Path,
    sae_source: SaeSource | None,
    device: object,
    overwrite: bool,
    log_to: str | None,
) -> None:
    """Train from the models (crosscoders.model_stream): no cache anywhere; `stream.json` beside
    the weights records what the run used. Under N data-parallel ranks each rank loads the pair
    and streams its own part of the token plan (model_stream's `part` / `parts`)."""
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

    batch_size, seed = options.batch_size, options.seed
    is_main = ddp.rank() == 0
    try:
        started = time.perf_counter()
        pair, config = open_model_stream(spec, batch_size, seed, device, options.steps)
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
        stream = model_stream(
            pair, config, batch_size, spec.buffer_batches, seed, sources=columns,
            part=ddp.rank(), parts=ddp.world_size(),
        )  # fmt: skip
        origins = _origins([pair.base.spec, pair.chat.spec], list(ROLES), layers)
        steps = options.steps if options.steps is not None else stream.per_epoch
        coder_config = options.coder_config(
            steps, pair.d_model, [origins[c] for c in stream.columns]
        )
        training = options.training_config(steps)
        record = stream_record(stream)
        trainer = Trainer(
            coder_config, training, stream, out, device, overwrite=overwrite,
            data=stream_identity(record), log_to=log_to,
        )  # fmt: skip
        if is_main:
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
    ranks = f" by {stream.parts} ranks, each on its part" if stream.parts > 1 else ""
    if is_main:
        print(
            f"dictionary written to {out} ({training.n_steps} steps of {batch_size} tokens from "
            f"a {config.n_tokens}-token plan streamed from the models{ranks}, {elapsed:.1f} s, "
            "no cache)",
            flush=True,
        )


def _source_columns(cache, model: str, layer: str | None) -> list[int]:
    """The cache column of an SAE's model role and layer."""
    from interp.layers import resolve_layer

    roles = [entry["role"] for entry in cache.manifest["models"]]
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
