"""What `interp cache` and a pipeline's [cache] step run: a paired activation cache of `pair`
at `layers` into `out`, from the command's options (interp.command_options.CacheOptions)."""

from pathlib import Path

from interp.cache.distributed import process_group
from interp.cache.writer import build_cache, cache_config
from interp.command_options import CacheOptions
from interp.device import resolve_device


def cache_activations(
    options: CacheOptions, *, pair: tuple[str, str] | list[str], layers: str, out: Path
) -> dict | None:
    """Write (or resume) the cache; returns the manifest on the main rank (None on the others
    of a several-process run)."""
    from interp.models import load_pair

    device = resolve_device(options.device)
    loaded = load_pair(*pair, dtype=options.model_dtype, device=device)
    config = cache_config(
        loaded,
        layers=[part for part in str(layers).split(",") if part.strip()],
        mix=options.mix,
        n_tokens=options.tokens,
        ctx=options.ctx,
        batch_size=options.batch_size,
        dtype=options.dtype,
        seed=options.seed,
        keep_special=options.keep_special,
        shard_tokens=options.shard_tokens,
        split=options.split,
    )
    with process_group() as ranks:
        manifest = build_cache(loaded, config, out, ranks=ranks, overwrite=options.overwrite)
    return manifest if ranks.is_main else None
