"""Where training batches come from: the `BatchStream` protocol and its implementations.

A `BatchStream` is a callable `stream(start)` yielding global batches number start, start + 1,
... (float32 [batch, n_sources, d]); restarting it at i gives what an uninterrupted stream would
give from i on, which is all exact resume needs. `PlantedDictionary.stream` (synthetic data),
`cache_stream` (an `interp.cache.ActivationCache`) and `tensor_stream` (an in-memory tensor)
implement it.
"""

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.cache import ActivationCache
from interp.cache.permutation import permute
from interp.errors import InterpError

BatchStream = Callable[[int], Iterator[Float[Tensor, "batch n_sources d"]]]


def cache_stream(
    cache: ActivationCache,
    batch_size: int,
    seed: int = 0,
    split: str = "train",
    sources: Sequence[int] | None = None,
) -> BatchStream:
    """Globally shuffled batches of raw (unnormalised) activations of `split`, endless: epoch e
    uses the cache reader's permutation for (seed, e) and drops its last incomplete batch. Batch i
    is computed from i alone (pointwise permutation), so a resumed stream skips nothing by reading.
    `sources` picks columns of the sources axis (model-major, as `cache.source_names`)."""
    start, stop = cache.split_range(split)
    per_epoch = (stop - start) // batch_size
    if per_epoch == 0:
        raise InterpError(
            f"split {split!r} of cache {str(cache.path)!r} has {stop - start} tokens: expected at "
            f"least one batch of {batch_size}"
        )
    columns = list(range(cache.n_sources)) if sources is None else list(sources)

    def batches(first: int) -> Iterator[Tensor]:
        index = first
        while True:
            epoch, within = divmod(index, per_epoch)
            rows = np.arange(within * batch_size, (within + 1) * batch_size, dtype=np.int64)
            tokens = start + permute(rows, stop - start, seed * 1_000_003 + epoch)
            yield cache.gather(tokens, normalize=False)[:, columns]
            index += 1

    return batches


def tensor_stream(
    acts: Float[Tensor, "n n_sources d"], batch_size: int, seed: int = 0
) -> BatchStream:
    """Endless shuffled batches of an in-memory tensor: epoch e is a permutation seeded by
    (seed, e), its last incomplete batch dropped; batch i depends on i alone."""
    per_epoch = acts.shape[0] // batch_size
    if per_epoch == 0:
        raise InterpError(f"{acts.shape[0]} rows: expected at least one batch of {batch_size}")

    def batches(first: int) -> Iterator[Tensor]:
        index = first
        while True:
            epoch, within = divmod(index, per_epoch)
            order = torch.randperm(
                acts.shape[0], generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            )
            yield acts[order[within * batch_size : (within + 1) * batch_size]]
            index += 1

    return batches
