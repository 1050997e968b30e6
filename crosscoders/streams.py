"""Where training batches come from: the `BatchStream` protocol and its implementations.

A `BatchStream` is a callable `stream(start)` yielding global batches number start, start + 1,
... (float32 [batch, n_sources, d]); restarting it at i gives what an uninterrupted stream would
give from i on, which is all exact resume needs. `PlantedDictionary.stream` (synthetic data),
`cache_stream` (an `interp.cache.ActivationCache`) and `tensor_stream` (an in-memory tensor)
implement it. A stream may also have `describe(i)`: where batch i comes from (the trainer names it
when a loss is not finite). A stream with `parts` = N > 1 (a model stream of one data-parallel rank,
crosscoders.model_stream) yields only this rank's B / N rows of each global batch, read from its
own part of the data; the trainer then runs under exactly N ranks and gathers the ranks' rows
where it needs the global batch (the initialisation sample).
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


class CacheStream:
    """The `BatchStream` of `cache_stream`, which can also say where a batch came from."""

    def __init__(
        self, cache: ActivationCache, batch_size: int, seed: int, split: str, columns: list[int]
    ) -> None:
        self.cache, self.batch_size, self.seed, self.columns = cache, batch_size, seed, columns
        self.start, self.stop = cache.split_range(split)
        self.per_epoch = (self.stop - self.start) // batch_size
        if self.per_epoch == 0:
            raise InterpError(
                f"split {split!r} of cache {str(cache.path)!r} has {self.stop - self.start} "
                f"tokens: expected at least one batch of {batch_size}"
            )

    def token_index(self, batch: int) -> np.ndarray:
        """Global token indices of batch number `batch` (a function of `batch` alone)."""
        epoch, within = divmod(batch, self.per_epoch)
        rows = np.arange(within * self.batch_size, (within + 1) * self.batch_size, dtype=np.int64)
        return self.start + permute(rows, self.stop - self.start, self.seed * 1_000_003 + epoch)

    def describe(self, batch: int) -> str:
        """Where batch number `batch` comes from: the cache and its shards."""
        files = self.cache.shard_files(self.token_index(batch))
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        return f"tokens of cache {str(self.cache.path)!r}, {shown}"

    def __call__(self, first: int) -> Iterator[Tensor]:
        index = first
        while True:
            yield self.cache.gather(self.token_index(index), normalize=False)[:, self.columns]
            index += 1


def cache_stream(
    cache: ActivationCache,
    batch_size: int,
    seed: int = 0,
    split: str = "train",
    sources: Sequence[int] | None = None,
) -> CacheStream:
    """Globally shuffled batches of raw (unnormalised) activations of `split`, endless: epoch e
    uses the cache reader's permutation for (seed, e) and drops its last incomplete batch. Batch i
    is computed from i alone (pointwise permutation), so a resumed stream skips nothing by reading.
    `sources` picks columns of the sources axis (model-major, as `cache.source_names`).

    A stream is made where a training run starts or resumes, so this is where every shard's
    sha256 is checked against the manifest (`cache.verify_checksums()`); each read then checks
    that its activations are finite (the reader)."""
    cache.verify_checksums()
    columns = list(range(cache.n_sources)) if sources is None else list(sources)
    return CacheStream(cache, batch_size, seed, split, columns)


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
