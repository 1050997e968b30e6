"""Evaluate one dictionary on its cache: what `interp dict eval` and a pipeline's [eval] step
run, with the options of `EvalOptions` (declared once: CLI, pipeline table, Python API). No torch
at import (`interp --help`)."""

from dataclasses import dataclass
from pathlib import Path

from interp.device import resolve_device
from interp.errors import InterpError
from interp.options import DEVICE_HELP, model_dtype_option, option


@dataclass(kw_only=True)
class EvalOptions:
    tokens: int = option(
        100_000, help="held-out cache tokens for FVE / L0 / dead / dense", check="positive"
    )
    batch_size: int = option(4096, help="tokens per evaluation batch", check="positive")
    splice: bool = option(True, help="also measure splice-in CE / KL (loads the models)")
    texts: int = option(64, help="how many texts for the splice-in loss", check="positive")
    texts_file: Path | None = option(
        None, help="splice-in texts, one per line (default: held-out wiki)", check="existing_file"
    )
    ctx: int = option(128, help="tokens per splice-in text", check="positive")
    massive_ratio: float = option(
        5.0,
        help="FVE also without tokens of norm > this x the median (0: off)",
        check="non_negative",
    )
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")


def evaluate_dictionary(options: EvalOptions, *, dictionary: Path, cache: Path) -> dict:
    """Reconstruction metrics on the cache's validation split and (unless `splice` is off) the
    splice-in LM loss of each model; written to DICTIONARY/eval.json and returned."""
    from crosscoders.evaluate import CacheBatches, reconstruction_metrics, splice_metrics
    from crosscoders.io import load_crosscoder
    from interp.cache import ActivationCache
    from interp.fileio import atomic_write_json
    from interp.models import load_model

    device = resolve_device(options.device)
    coder = load_crosscoder(dictionary, device)
    activation_cache = ActivationCache(cache)
    columns = dictionary_columns(coder.config, activation_cache)
    batch_size = options.batch_size
    batches = CacheBatches(
        activation_cache, columns, batch_size, max(1, options.tokens // batch_size)
    )
    reconstruction = reconstruction_metrics(coder, batches, massive_ratio=options.massive_ratio)
    result: dict[str, object] = {"reconstruction": reconstruction}
    if options.splice:
        specs = [source.model for source in coder.config.sources]
        loaded = {
            spec: load_model(spec, dtype=options.model_dtype, device=device)
            for spec in dict.fromkeys(specs)
        }
        result["splice"] = splice_metrics(
            coder,
            [loaded[spec] for spec in specs],
            [source.layer for source in coder.config.sources],
            splice_texts(options.texts_file)[: options.texts],
            max_length=options.ctx,
        )
    atomic_write_json(Path(dictionary) / "eval.json", result)
    return result


def fve_summary(reconstruction: dict) -> str:
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


def splice_texts(texts_file: Path | None) -> list[str]:
    if texts_file is None:
        from interp.datasets import load_texts

        return load_texts("wiki", "heldout")
    return [line for line in Path(texts_file).read_text().splitlines() if line.strip()]


def dictionary_columns(config, cache) -> list[int]:
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
