"""A `BatchStream` (streams.py) straight from the models: training with no activation cache.

`model_stream(pair, config, batch_size, buffer_batches, seed)` runs base and chat over the token
plan a cache of the same `CacheConfig` would hold (interp.cache.writer: `token_plan`, the
`BatchRunner` forward through `interp.hooks.residual_stream`, `stream_rows`), rounds the
activations to the config's storage dtype like the cache does, and hands the trainer shuffled
batches. Nothing is written to disk.

Shuffle buffer. The plan's stream of `n_tokens` tokens is cut into windows of
`buffer_batches * batch_size` tokens; window w (tokens [w W, (w + 1) W), the last one shorter)
is computed whole, held in the storage dtype on the models' device, and read in the order of the
pointwise permutation of interp.cache.permutation seeded by (seed, epoch, w). Batch j of a window
is its permuted rows [j B, (j + 1) B); a window's last incomplete batch is dropped. A window
mixes `buffer_batches` training batches' worth of consecutive plan tokens, i.e. many forward
batches of interleaved documents of every recipe of the mixture. `buffer_batches = 0` switches
the buffer off: batches are consecutive plan tokens, in plan order.

Determinism and seeking. What batch i holds is a function of (plan, seed, buffer, i) alone: its
epoch, window and rows follow from i, and the window is recomputed from the plan by the same
forward. So `stream(i)` restarts exactly where a killed run's checkpoint stopped (no token twice,
none skipped) and on the CPU gives the same bytes as an uninterrupted stream. Seeking costs at
most one window's forward. With one window covering the whole plan, the order is the one a
cache of the same tokens gives (`cache_stream(cache, B, seed, split="all")`: the same
permutation of the same token indices), which is how the tests compare the two.

Epochs: one epoch is `n_tokens // batch_size` batches; epoch e re-runs the forward of each
window (the last window computed is kept, so a plan that fits in one window runs the models
once) and reads it in a new permutation.

Data parallelism (`part`, `parts`). With N ranks each rank streams its own part of the plan and
runs the models on it alone: part r is plan tokens [r L, (r + 1) L), L = n_tokens // N (the last
n_tokens mod N tokens are not used), cut into windows of `buffer_batches * B / N` tokens exactly
as above, and the stream yields the rank's B / N rows of every global batch (the trainer sees
`parts` > 1 and takes them as its rows: global batch i = part 0's batch i, then part 1's, ..., the
rows `crosscoders.ddp.local_rows` would give each rank). The parts are disjoint, so an epoch of
N ranks uses every token of N L once; `parts = 1` is the single-process stream above. A single
process joining the N parts' batches in rank order trains the same dictionary as the N ranks
(tested).

`stream_record(stream)` is what a streamed run used (models and their fingerprints, the dtype
they ran in, layers, mix, token plan hash, tokens, seed, buffer, ranks), written beside the
weights as `stream.json` (`write_stream_record`, with the input normalisation the trainer took
from the stream's warm-up slice). `stream_identity(record)` goes into the trainer's
training.json, so a rerun into the same folder with another stream (or another number of ranks,
which parts the plan otherwise) is refused like one with another config.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from crosscoders.train_options import StreamSpec
from interp.cache.config import CacheConfig, format_mix
from interp.cache.permutation import permute
from interp.cache.token_stream import DatasetSource, TextSource
from interp.cache.writer import (
    ROLES,
    BatchRunner,
    _initial_manifest,
    check_config_fits_pair,
    refuse_nonfinite,
    stream_rows,
    token_plan,
)
from interp.errors import InterpError
from interp.fileio import atomic_write_json
from interp.fingerprint import model_fingerprint
from interp.models import ModelPair, model_dtype

STREAM_RECORD = "stream.json"
STREAM_FORMAT = "interp-activation-stream"
# fields of a cache manifest that describe shards on disk, not the stream
CACHE_ONLY_FIELDS = ("shards", "stats", "complete", "n_shards", "shard_tokens", "format")


def window_seed(seed: int, epoch: int, window: int, part: int = 0) -> int:
    """Seed of the permutation of one window of one part in one epoch. Window 0 of part 0 uses
    the cache reader's (seed, epoch) seed, so one window over the whole plan reads it as a cache
    would be read."""
    return seed * 1_000_003 + epoch + (window << 40) + (part << 56)


class ModelStream:
    """The `BatchStream` of `model_stream` (see the module docstring)."""

    def __init__(
        self,
        pair: ModelPair,
        config: CacheConfig,
        batch_size: int,
        buffer_batches: int,
        seed: int,
        source: TextSource,
        sources: Sequence[int] | None = None,
        part: int = 0,
        parts: int = 1,
    ) -> None:
        check_config_fits_pair(config, pair)
        if batch_size < 1:
            raise InterpError(f"bad batch_size {batch_size}: expected a positive integer")
        if buffer_batches < 0:
            raise InterpError(
                f"bad buffer size {buffer_batches} batches: expected 0 (off) or a positive integer"
            )
        if parts < 1 or not 0 <= part < parts:
            raise InterpError(f"bad part {part} of {parts}: expected 0 <= part < parts")
        if batch_size % parts:
            raise InterpError(
                f"batch_size = {batch_size} is not divisible by {parts} ranks: expected a "
                "multiple of the number of workers"
            )
        self.pair, self.config, self.source = pair, config, source
        self.part, self.parts = part, parts
        self.global_batch_size = batch_size
        self.batch_size = batch_size // parts  # the rows this stream yields per batch
        self.buffer_batches, self.seed = buffer_batches, seed
        self.plan = token_plan(pair, config, source)
        self.n_tokens = config.n_tokens
        self.part_tokens = self.n_tokens // parts
        self.offset = part * self.part_tokens  # plan token where this part starts
        self.per_epoch = self.part_tokens // self.batch_size
        if self.per_epoch == 0:
            per_rank = f", {self.part_tokens} per rank," if parts > 1 else ""
            raise InterpError(
                f"the stream has {self.n_tokens} tokens{per_rank}: expected at least one batch "
                f"of {batch_size} (raise --tokens or lower --batch-size)"
            )
        n_sources = 2 * len(config.layers)
        self.columns = list(range(n_sources)) if sources is None else list(sources)
        if not self.columns or not all(0 <= c < n_sources for c in self.columns):
            raise InterpError(f"bad sources {self.columns}: expected indices in 0..{n_sources - 1}")
        self.window_tokens = max(1, buffer_batches) * self.batch_size
        self.n_windows = -(-self.part_tokens // self.window_tokens)
        # only the models some source reads run (an SAE's stream runs one model)
        n_layers = len(config.layers)
        roles = [
            role for m, role in enumerate(ROLES) if any(c // n_layers == m for c in self.columns)
        ]
        self.runner = BatchRunner(
            pair, self.plan, config.layers, config.storage_dtype, pair.base.device, roles
        )
        # column of each source in the run models' activations (model-major, as a cache's)
        self.run_columns = [
            self.runner.roles.index(ROLES[c // n_layers]) * n_layers + c % n_layers
            for c in self.columns
        ]
        self._window: tuple[int, Tensor] | None = None  # the last window computed

    @property
    def shuffled(self) -> bool:
        return self.buffer_batches > 0

    def window_range(self, window: int) -> tuple[int, int]:
        """Plan stream tokens [start, stop) of window number `window` of this part."""
        start = self.offset + window * self.window_tokens
        return start, min(start + self.window_tokens, self.offset + self.part_tokens)

    def locate(self, batch: int) -> tuple[int, int, int]:
        """(epoch, window, batch within the window) of global batch number `batch`."""
        epoch, within = divmod(batch, self.per_epoch)
        per_window = self.window_tokens // self.batch_size  # every window but the last is full
        window, local = divmod(within, per_window)
        return epoch, window, local

    def token_index(self, batch: int) -> np.ndarray:
        """Plan stream indices of the tokens of batch number `batch` (a function of it alone)."""
        epoch, window, local = self.locate(batch)
        start, stop = self.window_range(window)
        rows = np.arange(local * self.batch_size, (local + 1) * self.batch_size, dtype=np.int64)
        if self.shuffled:
            rows = permute(rows, stop - start, window_seed(self.seed, epoch, window, self.part))
        return start + rows

    def window_acts(self, window: int) -> Tensor:
        """Activations [tokens, run models, n_layers, d] of one window, in the storage dtype."""
        if self._window is not None and self._window[0] == window:
            return self._window[1]
        self._window = None  # let the old window go before the new one is computed
        start, stop = self.window_range(window)
        tensors = stream_rows(self.runner, start, stop)
        refuse_nonfinite(tensors, f"stream window {window}", self.config.dtype)
        self._window = (window, tensors["acts"])
        return tensors["acts"]

    def batch(self, batch: int) -> Float[Tensor, "batch n_sources d"]:
        _, window, _ = self.locate(batch)
        start, _ = self.window_range(window)
        acts = self.window_acts(window)
        rows = torch.from_numpy(self.token_index(batch) - start).to(acts.device)
        values = rearrange(acts[rows].float(), "n m l d -> n (m l) d")
        return values[:, self.run_columns]

    def describe(self, batch: int) -> str:
        """Where batch number `batch` comes from (named when its loss is not finite)."""
        epoch, window, _ = self.locate(batch)
        start, stop = self.window_range(window)
        part = f" of part {self.part} (rank) of {self.parts}" if self.parts > 1 else ""
        return (
            f"streamed from {self.config.base!r} / {self.config.chat!r}, epoch {epoch}, window "
            f"{window}{part} (plan tokens {start}..{stop - 1})"
        )

    def __call__(self, first: int) -> Iterator[Tensor]:
        index = first
        while True:
            yield self.batch(index)
            index += 1


def model_stream(
    pair: ModelPair,
    config: CacheConfig,
    batch_size: int,
    buffer_batches: int = 32,
    seed: int = 0,
    source: TextSource | None = None,
    sources: Sequence[int] | None = None,
    part: int = 0,
    parts: int = 1,
) -> ModelStream:
    """Endless batches of raw activations of `pair` on the token plan of `config` (the plan a
    cache of `config` holds), shuffled in windows of `buffer_batches` batches (0: plan order).
    `sources` picks columns of the sources axis (model-major, as a cache's `source_names`).
    `part` of `parts`: this data-parallel rank's part of the plan and rows of each batch."""
    return ModelStream(
        pair,
        config,
        batch_size,
        buffer_batches,
        seed,
        source or DatasetSource(config.split),
        sources,
        part,
        parts,
    )


def stream_record(stream: ModelStream) -> dict[str, Any]:
    """What a streamed run uses, in the terms of a cache manifest (same `config`, `models` with
    fingerprints, `dataset` with the mix and the plan's sha256), plus the models' dtype, the
    buffer and the seed."""
    pair = stream.pair
    fingerprints = [model_fingerprint(loaded.model) for loaded in pair]
    manifest = _initial_manifest(stream.config, pair, fingerprints, stream.plan, stream.source)
    record = {key: value for key, value in manifest.items() if key not in CACHE_ONLY_FIELDS}
    return {
        "format": STREAM_FORMAT,
        **record,
        "mix": format_mix(stream.config.mix),
        "sources": stream.columns,
        "batch_size": stream.global_batch_size,
        "buffer": {  # per rank
            "batches": stream.buffer_batches,
            "tokens": stream.window_tokens if stream.shuffled else 0,
        },
        "seed": stream.seed,
        # each data-parallel rank's part of the plan (rank r: tokens [r tokens_each, ...))
        "ranks": {"count": stream.parts, "tokens_each": stream.part_tokens},
    }


def stream_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record that decide which activations a run trains on, in which order
    (the trainer keeps them in training.json: a rerun on another stream is refused)."""
    keys = ("config_hash", "sources", "batch_size", "buffer", "seed", "model_dtype")
    stream = {key: record[key] for key in keys}
    if record["ranks"]["count"] > 1:  # the parts decide which tokens make each batch
        stream["ranks"] = record["ranks"]["count"]
    return {
        "stream": stream,
        "fingerprints": [model["fingerprint"] for model in record["models"]],
        "plan_sha256": record["dataset"]["plan_sha256"],
    }


def write_stream_record(
    out: Path, record: dict[str, Any], input_scale: Tensor, warmup_tokens: int, normalized: bool
) -> None:
    """`stream.json` beside the weights: the record plus the input normalisation the trainer
    took from the stream's first `warmup_tokens` tokens (scale_m = sqrt(d) / E||x_m||)."""
    scale = input_scale.detach().float().cpu()
    normalization: dict[str, Any] = {"warmup_tokens": warmup_tokens, "input_scale": scale.tolist()}
    if normalized:
        normalization["mean_norm"] = (int(record["d_model"]) ** 0.5 / scale).tolist()
    atomic_write_json(
        Path(out) / STREAM_RECORD, {**record, "normalization": normalization}, indent=2
    )


def open_model_stream(
    spec: StreamSpec,
    batch_size: int,
    seed: int,
    device: str | torch.device,
    n_steps: int | None,
    source: TextSource | None = None,
) -> tuple[ModelPair, CacheConfig]:
    """Load the pair of `spec` on `device` and the `CacheConfig` of its token plan."""
    from interp.cache.writer import cache_config
    from interp.models import load_pair

    tokens = spec.tokens
    if tokens is None:
        if n_steps is None:
            raise InterpError(
                "streaming needs --tokens (tokens of the token plan) or --steps (then "
                "--tokens = steps x batch size)"
            )
        tokens = n_steps * batch_size
    pair = load_pair(
        spec.base, spec.chat, dtype=model_dtype(spec.model_dtype, device), device=str(device)
    )
    config = cache_config(
        pair,
        layers=[part for part in spec.layers.split(",") if part.strip()],
        mix=spec.mix,
        n_tokens=tokens,
        ctx=spec.ctx,
        batch_size=spec.forward_batch,
        dtype=spec.dtype,
        seed=seed,
        split=spec.split,
    )
    return pair, config
