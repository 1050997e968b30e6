"""Paired activation cache: base and chat residual streams on one token stream, in shards.

Writing (`interp cache ...` on the command line):

    from interp.cache import build_cache, cache_config
    config = cache_config(pair, layers=[0.5], mix="wiki:0.5,chat:0.5", n_tokens=1_000_000)
    manifest = build_cache(pair, config, "runs/demo/cache")   # resumable; same call finishes it

Reading (for trainers and analyses):

    from interp.cache import ActivationCache
    cache = ActivationCache("runs/demo/cache", validation_fraction=0.05)
    cache.n_tokens, cache.d_model, cache.models, cache.layers      # sizes and provenance
    cache.n_sources, cache.source_names      # n_models * n_layers, model-major: base/..., chat/...
    cache.normalization_scales()             # [n_sources]: sqrt(d) / E||x||, from the manifest
    for x in cache.iterate_batches(4096, split="train", seed=0, normalize=True, epochs=1):
        ...                                  # x: float32 [batch, n_sources, d], globally shuffled
    for b in cache.iterate_batches(4096, split="validation", with_tokens=True):
        b.acts, b.index, b.token_ids, b.seq_ids, b.positions
    for b in cache.iterate_sequential(4096, split="all"):   # stream order, ActivationBatch
        ...
    cache.gather(index, normalize=False)     # activations of any global token indices
    cache.tokens(index)                      # {token_ids, seq_ids, positions} of those indices
    cache.sequence_range(seq_id)             # [start, stop) of one sequence's cached tokens

Contract: one epoch yields every token of the split exactly once; the same seed gives the same
batches; memory is bounded by the batch size (shards are memory-mapped, the shuffle is a
pointwise permutation); `normalize=True` multiplies source s by `normalization_scales()[s]`
(divide by it to get back raw activations). Positions are those of the model input (BOS at 0,
which is not cached by default). Validation is the tail of the stream, cut at a sequence boundary.

Folder layout and the manifest: interp.cache.manifest; shard files: interp.cache.shard; the token
stream (truncation, mixture, excluded tokens): interp.cache.token_stream; the integrity checks
(`interp cache verify`, the reader's checks on open and read, `cache.verify_checksums()` where a
training run starts, the writer's re-check on resume): interp.cache.verify.
"""

from interp.cache.config import CacheConfig, parse_mix
from interp.cache.reader import ActivationBatch, ActivationCache
from interp.cache.token_stream import DatasetSource, InMemorySource, TextSource
from interp.cache.verify import verify_cache
from interp.cache.writer import build_cache, cache_config

__all__ = [
    "ActivationBatch",
    "ActivationCache",
    "CacheConfig",
    "DatasetSource",
    "InMemorySource",
    "TextSource",
    "build_cache",
    "cache_config",
    "parse_mix",
    "verify_cache",
]
