"""Reading a finished activation cache (see the package docstring for the API in one page).

Shards are memory-mapped (numpy memmap of the raw safetensors payload; bf16 is converted from its
uint16 bits), so memory stays bounded by the batch size whatever the cache size. Shuffled batches
draw token indices through a seeded pointwise permutation (interp.cache.permutation): a true
global, token-level shuffle with no index array of the cache's size.

Train/validation split: the last `validation_fraction` of the token stream, moved forward to the
next sequence boundary so that no sequence is in both. The stream interleaves shuffled documents
of every recipe, so its tail is a sample of the same mixture.

Integrity (interp.cache.verify): opening checks every shard's presence, size, header, dtypes and
shapes against the manifest; every read checks that the activations it returns are finite; and
`verify_checksums()` (called where a training run starts or resumes, by
`crosscoders.streams.cache_stream`) checks every shard's sha256. Damage is a `ShardDamaged` error
naming the shard, the kind of damage and what to do.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from interp.cache.manifest import read_manifest
from interp.cache.permutation import permute
from interp.cache.shard import TensorEntry, memmap_tensor, payload_to_float32
from interp.cache.verify import (
    ShardDamaged,
    damaged_shards,
    first_nonfinite_row,
    open_shard,
)
from interp.errors import InterpError

SPLITS = ("train", "validation", "all")


@dataclass
class ActivationBatch:
    """Activations of a batch of tokens with where they come from in the token stream."""

    acts: Float[Tensor, "batch n_sources d_model"]
    index: Int[Tensor, " batch"]  # global token index in the cache
    token_ids: Int[Tensor, " batch"]
    seq_ids: Int[Tensor, " batch"]
    positions: Int[Tensor, " batch"]


class _Shard:
    def __init__(self, path: Path, tensors: dict[str, TensorEntry]):
        self.dtype_tag = tensors["acts"].dtype
        self.acts = memmap_tensor(path, tensors["acts"])
        self.token_ids = memmap_tensor(path, tensors["token_ids"])
        self.seq_ids = memmap_tensor(path, tensors["seq_ids"])
        self.positions = memmap_tensor(path, tensors["positions"])


def source_column(roles: Sequence[str], layers: Sequence[int], role: str, layer: int) -> int:
    """Index of (`role`, `layer`) on a sources axis in model-major order (all layers of the
    first model, then all of the second): role r, layer position p -> r * n_layers + p. The
    order of caches, model streams and dictionaries trained on them."""
    if role not in roles:
        raise InterpError(f"unknown model {role!r}: the sources hold {list(roles)}")
    if layer not in layers:
        raise InterpError(f"layer {layer} is not among the sources' layers {list(layers)}")
    return list(roles).index(role) * len(layers) + list(layers).index(layer)


class ActivationCache:
    """A finished cache folder, read through memory maps."""

    def __init__(self, path: str | Path, validation_fraction: float = 0.05):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if not self.manifest["complete"]:
            written = len(self.manifest["shards"])
            raise InterpError(
                f"cache {str(self.path)!r} is incomplete ({written}/{self.manifest['n_shards']} "
                "shards): rerun the same `interp cache` command to finish it"
            )
        if not 0.0 <= validation_fraction < 1.0:
            raise InterpError(
                f"bad validation_fraction {validation_fraction}: expected a number in [0, 1)"
            )
        self._shards = [
            _Shard(self.path / shard["file"], open_shard(self.path, self.manifest, shard))
            for shard in self.manifest["shards"]
        ]
        self._checksums_verified = False
        counts = np.array([shard["n_tokens"] for shard in self.manifest["shards"]], dtype=np.int64)
        self._shard_starts = np.concatenate([[0], np.cumsum(counts)])
        self.n_tokens = int(self._shard_starts[-1])
        assert self.n_tokens == self.manifest["n_tokens"], (
            self.n_tokens,
            self.manifest["n_tokens"],
        )
        self._scales = self.normalization_scales()
        self._validation_start = self._sequence_boundary_at(
            int(round(self.n_tokens * (1.0 - validation_fraction)))
        )

    # --- what the cache holds -----------------------------------------------------------------

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def models(self) -> list[str]:
        """Model specs in cache order (base, chat)."""
        return [model["spec"] for model in self.manifest["models"]]

    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def roles(self) -> list[str]:
        """Model roles in cache order (base, chat)."""
        return [model["role"] for model in self.manifest["models"]]

    @property
    def n_sources(self) -> int:
        return len(self.models) * len(self.layers)

    def source_column(self, role: str, layer: int) -> int:
        """Index of (`role`, `layer`) on the cache's sources axis."""
        return source_column(self.roles, self.layers, role, layer)

    @property
    def source_names(self) -> list[str]:
        """`base/resid_post[9]`, ... in the model-major order of the sources axis."""
        return [
            f"{model['role']}/{name}"
            for model in self.manifest["models"]
            for name in self.manifest["hook_names"]
        ]

    def mean_norms(self) -> Float[Tensor, " n_sources"]:
        """E||x||_2 per source, from the manifest's statistics."""
        return torch.tensor(self.manifest["stats"]["mean_norm"], dtype=torch.float32).flatten()

    def means(self) -> Float[Tensor, "n_sources d_model"]:
        means = torch.tensor(self.manifest["stats"]["mean"], dtype=torch.float32)
        return rearrange(means, "m l d -> (m l) d")

    def normalization_scales(self) -> Float[Tensor, " n_sources"]:
        """Per-source factors that make the mean norm sqrt(d_model) (the crosscoder papers'
        normalisation: each model/layer scaled separately so neither dominates the loss)."""
        return self.d_model**0.5 / self.mean_norms()

    def split_range(self, split: str) -> tuple[int, int]:
        """[start, stop) of a split in the global token stream."""
        if split == "train":
            return 0, self._validation_start
        if split == "validation":
            return self._validation_start, self.n_tokens
        if split == "all":
            return 0, self.n_tokens
        raise InterpError(f"unknown split {split!r}: expected one of {list(SPLITS)}")

    def n_split_tokens(self, split: str) -> int:
        start, stop = self.split_range(split)
        return stop - start

    def verify_checksums(self) -> None:
        """Check every shard's sha256 against the manifest (once per instance): `ShardDamaged`
        for the first damaged shard. Reads the whole cache (several shards in parallel)."""
        if self._checksums_verified:
            return
        damaged = damaged_shards(self.path, self.manifest, self.manifest["shards"], finite=False)
        if damaged:
            raise damaged[0]
        self._checksums_verified = True

    # --- random access ------------------------------------------------------------------------

    def gather(
        self, index: np.ndarray | Tensor, normalize: bool = False
    ) -> Float[Tensor, "batch n_sources d_model"]:
        """Activations of arbitrary global token indices, float32, sources flattened model-major."""
        index = np.asarray(index, dtype=np.int64)
        shard_of, local = self._locate(index)
        flat = np.empty(
            (len(index), *self._shards[0].acts.shape[1:]), dtype=self._shards[0].acts.dtype
        )
        for shard, positions in self._by_shard(shard_of):
            rows = local[positions]
            order = np.argsort(rows, kind="stable")  # read each shard front to back
            flat[positions[order]] = self._shards[shard].acts[rows[order]]
        values = payload_to_float32(flat, self._shards[0].dtype_tag)
        self._check_finite(values, index)
        acts = rearrange(values, "n m l d -> n (m l) d")
        if normalize:
            acts *= self._scales[None, :, None]
        return acts

    def shard_files(self, index: np.ndarray | Tensor) -> list[str]:
        """The shard files that hold these global token indices, in shard order."""
        shard_of, _ = self._locate(np.asarray(index, dtype=np.int64))
        return [self.manifest["shards"][int(i)]["file"] for i in np.unique(shard_of)]

    def tokens(self, index: np.ndarray | Tensor) -> dict[str, Tensor]:
        """`token_ids`, `seq_ids`, `positions` of arbitrary global token indices."""
        index = np.asarray(index, dtype=np.int64)
        shard_of, local = self._locate(index)
        found = {
            name: np.empty(len(index), dtype=np.int64)
            for name in ("token_ids", "seq_ids", "positions")
        }
        for shard, positions in self._by_shard(shard_of):
            for name, values in found.items():
                values[positions] = getattr(self._shards[shard], name)[local[positions]]
        return {name: torch.from_numpy(values) for name, values in found.items()}

    def batch(self, index: np.ndarray | Tensor, normalize: bool = False) -> ActivationBatch:
        index = np.asarray(index, dtype=np.int64)
        return ActivationBatch(
            acts=self.gather(index, normalize), index=torch.from_numpy(index), **self.tokens(index)
        )

    def sequence_range(self, seq_id: int) -> tuple[int, int]:
        """[start, stop) of one sequence's cached tokens (seq ids never decrease in the stream)."""
        firsts = np.array([s["first_seq_id"] for s in self.manifest["shards"]])
        lasts = np.array([s["last_seq_id"] for s in self.manifest["shards"]])
        shards = np.flatnonzero((firsts <= seq_id) & (lasts >= seq_id))
        if len(shards) == 0:
            raise InterpError(f"sequence {seq_id} is not in cache {str(self.path)!r}")
        first, last = shards[0], shards[-1]
        start = self._shard_starts[first] + np.searchsorted(
            self._shards[first].seq_ids, seq_id, "left"
        )
        stop = self._shard_starts[last] + np.searchsorted(
            self._shards[last].seq_ids, seq_id, "right"
        )
        return int(start), int(stop)

    # --- iteration ----------------------------------------------------------------------------

    def iterate_batches(
        self,
        batch_size: int,
        split: str = "train",
        seed: int = 0,
        normalize: bool = True,
        epochs: int | None = 1,
        drop_last: bool = False,
        with_tokens: bool = False,
    ) -> Iterator[Tensor | ActivationBatch]:
        """Globally shuffled token batches of `split`, a new permutation each epoch (seeded by
        `seed` and the epoch); `epochs=None` repeats forever. Yields float32 tensors
        [batch, n_sources, d] or, `with_tokens`, `ActivationBatch`es."""
        start, stop = self.split_range(split)
        count = stop - start
        if count == 0:
            raise InterpError(f"split {split!r} of cache {str(self.path)!r} holds no tokens")
        if batch_size <= 0:
            raise InterpError(f"bad batch_size {batch_size}: expected a positive integer")
        epoch = 0
        while epochs is None or epoch < epochs:
            epoch_seed = seed * 1_000_003 + epoch  # distinct permutations per (seed, epoch)
            for low in range(0, count, batch_size):
                high = min(low + batch_size, count)
                if drop_last and high - low < batch_size:
                    break
                index = start + permute(np.arange(low, high, dtype=np.int64), count, epoch_seed)
                if with_tokens:
                    yield self.batch(index, normalize)
                else:
                    yield self.gather(index, normalize)
            epoch += 1

    def iterate_sequential(
        self, batch_size: int, split: str = "all", normalize: bool = False
    ) -> Iterator[ActivationBatch]:
        """Every token of `split` once, in stream order (for analysis passes)."""
        start, stop = self.split_range(split)
        for low in range(start, stop, batch_size):
            high = min(low + batch_size, stop)
            yield self._contiguous(low, high, normalize)

    # --- internals ----------------------------------------------------------------------------

    def _locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(index) and (index.min() < 0 or index.max() >= self.n_tokens):
            raise InterpError(f"token index out of range: expected 0..{self.n_tokens - 1}")
        shard_of = np.searchsorted(self._shard_starts, index, side="right") - 1
        return shard_of, index - self._shard_starts[shard_of]

    @staticmethod
    def _by_shard(shard_of: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        order = np.argsort(shard_of, kind="stable")
        shards, starts = np.unique(shard_of[order], return_index=True)
        for shard, group in zip(shards, np.split(order, starts[1:]), strict=True):
            yield int(shard), group

    def _contiguous(self, low: int, high: int, normalize: bool) -> ActivationBatch:
        index = torch.arange(low, high, dtype=torch.int64)
        shard = int(np.searchsorted(self._shard_starts, low, side="right") - 1)
        parts: dict[str, list[np.ndarray]] = {
            name: [] for name in ("acts", "token_ids", "seq_ids", "positions")
        }
        while low < high:
            start = int(self._shard_starts[shard])
            stop = min(high, int(self._shard_starts[shard + 1]))
            for name, chunks in parts.items():
                chunks.append(
                    np.asarray(getattr(self._shards[shard], name)[low - start : stop - start])
                )
            low, shard = stop, shard + 1
        values = payload_to_float32(np.concatenate(parts["acts"]), self._shards[0].dtype_tag)
        self._check_finite(values, index.numpy())
        acts = rearrange(values, "n m l d -> n (m l) d")
        if normalize:
            acts *= self._scales[None, :, None]
        tokens = {
            name: torch.from_numpy(np.concatenate(parts[name]).astype(np.int64))
            for name in ("token_ids", "seq_ids", "positions")
        }
        return ActivationBatch(acts=acts, index=index, **tokens)

    def _check_finite(self, values: Tensor, index: np.ndarray) -> None:
        """Refuse to return NaN or inf: `ShardDamaged` naming the shard and row of the first."""
        bad = first_nonfinite_row(values)
        if bad is None:
            return
        shard_of, local = self._locate(index[bad : bad + 1])
        record = self.manifest["shards"][int(shard_of[0])]
        raise ShardDamaged(
            self.path, record["file"], f"NaN or inf activations (row {int(local[0])})"
        )

    def _sequence_boundary_at(self, index: int) -> int:
        """The first token index >= `index` that starts a sequence (or n_tokens)."""
        if index <= 0 or index >= self.n_tokens:
            return max(0, min(index, self.n_tokens))
        previous = int(self.tokens(np.array([index - 1]))["seq_ids"][0])
        start, stop = self.sequence_range(previous)
        return stop if start < index else start
