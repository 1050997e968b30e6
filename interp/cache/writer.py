"""Writing a paired activation cache: both models of a pair on the same token stream.

`build_cache(pair, config, out)` plans the token stream (interp.cache.token_stream), runs each
batch through base and chat with `interp.hooks.residual_stream` (the forward stops after the
deepest requested block), keeps the cached positions, and fills fixed-size shards. After each
shard: write it durably (interp.fileio: unique temp name, fsync, rename), then record it in
`manifest.json` (atomic rewrite); `ShardWriter` does both in background threads while the next
shard's forward runs, with the bytes of doing them in line. A rerun of the same config on the
same folder re-checks the recorded shards it would reuse (size, header, sha256 against the
manifest, finiteness), skips the sound ones and recomputes the missing and damaged ones, so a run
killed at any moment (SIGKILL included) or a shard damaged since ends, once rerun, with the same
bytes as an uninterrupted run.
Everything that can be wrong with the input is checked before the folder is touched; a second
process writing the same folder is refused at once (`interp.fileio.writer_lock`). Activations
that are NaN or inf are refused, never written.
"""

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp.cache.background import OrderedWorker
from interp.cache.config import (
    CacheConfig,
    canonical_dtype,
    default_shard_tokens,
    parse_mix,
)
from interp.cache.distributed import Ranks
from interp.cache.manifest import (
    FORMAT,
    MANIFEST_NAME,
    SHARD_GLOB,
    VERSION,
    ManifestDamaged,
    empty_stats,
    manifest_path,
    read_manifest,
    record_shard,
    shard_sums,
    write_manifest,
)
from interp.cache.shard import parts_sha256, shard_name, shard_parts, write_shard_parts
from interp.cache.token_stream import DatasetSource, TextSource, TokenPlan, plan_token_stream
from interp.cache.verify import damaged_shards
from interp.errors import InterpError
from interp.fileio import TMP_MARK, WRITER_LOCK_NAME, guard_config, writer_lock
from interp.fingerprint import model_fingerprint
from interp.hooks import residual_stream
from interp.layers import LayerSpec, hook_name, resolve_layers
from interp.models import RECORDED_BEFORE_MODEL_DTYPE, ModelPair, dtype_name

ROLES = ("base", "chat")
LEGACY_TMP_SUFFIX = ".tmp"  # the temp name of shards and manifests before interp.fileio
# sha256 is sequential within a shard (~1.7 GB/s a core with SHA-NI, no faster than a fast
# disk): with cores to spare, several shards hash at once
HASH_THREADS = max(1, min(4, (os.cpu_count() or 1) // 4))
WRITE_QUEUE_DEPTH = 2  # finished shards waiting per background stage (bounds the memory in flight)


def is_temp_file(name: str) -> bool:
    """A temp file of an interrupted write (interp.fileio's unique names, or the old `.tmp`)."""
    return TMP_MARK in name or name.endswith(LEGACY_TMP_SUFFIX)


def cache_config(
    pair: ModelPair,
    layers: Sequence[LayerSpec],
    mix: str,
    n_tokens: int,
    ctx: int = 128,
    batch_size: int = 8,
    dtype: str = "bf16",
    seed: int = 0,
    keep_special: bool = False,
    shard_tokens: int | None = None,
    split: str = "train",
) -> CacheConfig:
    """A `CacheConfig` for `pair`: layers resolved, dtype canonical, default shard size."""
    resolved = tuple(resolve_layers(list(layers), pair.n_layers))
    canonical = canonical_dtype(dtype)
    if shard_tokens is None:
        shard_tokens = default_shard_tokens(len(ROLES), len(resolved), pair.d_model, canonical)
    return CacheConfig(
        base=pair.base.spec,
        chat=pair.chat.spec,
        layers=resolved,
        mix=parse_mix(mix),
        n_tokens=n_tokens,
        shard_tokens=shard_tokens,
        ctx=ctx,
        batch_size=batch_size,
        dtype=canonical,
        seed=seed,
        keep_special=keep_special,
        split=split,
    )


class BatchRunner:
    """Runs plan batches through the pair's models (`roles`: which of them, in ROLES order; a
    cache holds both, a stream for an SAE needs one); keeps the last batch for shard
    boundaries."""

    def __init__(
        self,
        pair: ModelPair,
        plan: TokenPlan,
        layers: Sequence[int],
        dtype: torch.dtype,
        acts_device: torch.device | str = "cpu",
        roles: Sequence[str] = ROLES,
    ):
        self.pair, self.plan, self.layers, self.dtype = pair, plan, list(layers), dtype
        self.acts_device = torch.device(acts_device)  # where `rows` leaves the activations
        assert roles and all(role in ROLES for role in roles), roles
        self.roles = [role for role in ROLES if role in roles]
        pad = pair.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self._last: tuple[int, dict[str, Tensor]] | None = None

    def rows(self, batch: int) -> dict[str, Tensor]:
        """The cached rows of one batch, in stream order (sequence-major, then position)."""
        if self._last is not None and self._last[0] == batch:
            return self._last[1]
        input_ids, attention, keep = self.plan.batch_tensors(batch, self.pad_id)
        device = self.pair.base.device
        streams = [
            residual_stream(loaded.model, input_ids.to(device), self.layers, attention.to(device))
            for role, loaded in zip(ROLES, self.pair, strict=True)
            if role in self.roles
        ]
        # [batch, seq, n_layers, d] per model -> [batch, seq, n_models, n_layers, d]
        acts = torch.stack(streams, dim=2)[keep.to(device)]
        seq_ids = torch.tensor(list(self.plan.batch_seq_ids(batch)), dtype=torch.int64)
        positions = torch.arange(input_ids.shape[1], dtype=torch.int32)
        rows = {
            "acts": acts.to(self.dtype).to(self.acts_device),
            "token_ids": input_ids[keep].to(torch.int32),
            "seq_ids": seq_ids[:, None].expand_as(keep)[keep].contiguous(),
            "positions": positions[None, :].expand_as(keep)[keep].contiguous(),
        }
        self._last = (batch, rows)
        return rows


def _initial_manifest(
    config: CacheConfig,
    pair: ModelPair,
    fingerprints: list[str],
    plan: TokenPlan,
    source: TextSource,
) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_json(),
        "config_hash": config.hash,
        "models": [
            {
                "role": role,
                "spec": loaded.spec,
                "fingerprint": fingerprint,
                "family": loaded.family,
                "d_model": loaded.d_model,
                "n_layers": loaded.n_layers,
            }
            for role, loaded, fingerprint in zip(ROLES, pair, fingerprints, strict=True)
        ],
        "layers": list(config.layers),
        "hook_names": [hook_name(layer) for layer in config.layers],
        "d_model": pair.d_model,
        "dtype": config.dtype,
        "model_dtype": dtype_name(pair.base.dtype),  # the forward's; `dtype` is the storage's
        "excluded_token_ids": plan.excluded,
        "n_tokens": config.n_tokens,
        "shard_tokens": config.shard_tokens,
        "n_shards": plan.n_shards,
        "dataset": {
            "source": source.describe(),
            "mix": [
                {
                    "recipe": use.recipe,
                    "weight": use.weight,
                    "origin": use.origin,
                    "sequences": use.sequences,
                    "tokens": use.tokens,
                    "passes": use.passes,
                }
                for use in plan.usage
            ],
            "n_sequences": len(plan.sequences),
            "plan_sha256": plan.sha256(),
        },
        "shards": [],
        "stats": empty_stats(len(ROLES), len(config.layers), pair.d_model),
        "complete": False,
    }


def cache_identity(manifest: dict) -> dict:
    """What makes a folder's cache this very cache: its config, the dtype the models ran in,
    each model's weights and the token stream (the config guard of interp.fileio compares
    these)."""
    return {
        "config_hash": manifest["config_hash"],
        "model_dtype": manifest.get("model_dtype", RECORDED_BEFORE_MODEL_DTYPE),
        "fingerprints": [model["fingerprint"] for model in manifest["models"]],
        "plan_sha256": manifest["dataset"]["plan_sha256"],
    }


def _mismatch(out: Path, existing: dict, fresh: dict) -> str:
    """Why the cache in `out` is not the one asked for, with what to do."""
    if existing["config_hash"] != fresh["config_hash"]:
        differences = CacheConfig.from_json(fresh["config"]).differences(
            CacheConfig.from_json(existing["config"])
        )
        return (
            f"{str(out)!r} holds a cache of another config ({'; '.join(differences)}): "
            "rerun with the same options to resume it, choose another --out, or --overwrite"
        )
    recorded, running = cache_identity(existing)["model_dtype"], fresh["model_dtype"]
    if recorded != running:
        return (
            f"{str(out)!r} holds a cache made with the models in {recorded}, and they load in "
            f"{running} now (--model-dtype auto is bf16 on CUDA, fp32 on the CPU): rerun with "
            f"--model-dtype {recorded} to resume it, choose another --out, or --overwrite"
        )
    for old, new in zip(existing["models"], fresh["models"], strict=True):
        if old["fingerprint"] != new["fingerprint"]:
            return (
                f"{str(out)!r} was cached from other weights for {new['role']} model "
                f"{new['spec']!r} (fingerprint {old['fingerprint'][:12]} != "
                f"{new['fingerprint'][:12]}): choose another --out, or --overwrite"
            )
    return (
        f"{str(out)!r} was cached from another token stream (the dataset changed since): "
        "choose another --out, or --overwrite"
    )


def _check_existing(out: Path, fresh: dict, overwrite: bool) -> tuple[dict | None, bool]:
    """(the manifest already in `out` if it is this very cache, whether `overwrite` replaces
    what is there): (None, False) for a new or empty folder, (None, True) for another cache or a
    damaged one (shards without a readable manifest) with `overwrite`; without it those are
    refused (interp.fileio.guard_config), and so is a folder of other files."""
    if out.exists() and not out.is_dir():
        raise InterpError(f"cache folder {str(out)!r} exists and is not a folder")
    if not out.is_dir():
        return None, False
    try:
        existing = read_manifest(out)
    except ManifestDamaged as damage:
        if overwrite:
            return None, True
        raise InterpError(str(damage)) from None
    except InterpError:
        others = [
            p.name for p in out.iterdir() if not is_temp_file(p.name) and p.name != WRITER_LOCK_NAME
        ]
        if others:
            raise InterpError(
                f"cache folder {str(out)!r} is not empty and holds no {MANIFEST_NAME} "
                f"(found {sorted(others)[:3]}): choose a new or empty folder"
            ) from None
        return None, False
    replace = guard_config(
        out / MANIFEST_NAME,
        cache_identity(fresh),
        overwrite,
        "a cache",
        previous=cache_identity(existing),
        explain=lambda: _mismatch(out, existing, fresh),
    )
    return (None, True) if replace else (existing, False)


def _remove_cache(out: Path) -> None:
    """Delete the files of the cache in `out` (shards, manifest, temp files), nothing else."""
    for path in out.iterdir():
        if path.match(SHARD_GLOB) or is_temp_file(path.name):
            path.unlink()
    manifest_path(out).unlink(missing_ok=True)


def _create_folder(out: Path, manifest: dict) -> None:
    try:
        write_manifest(out, manifest)
    except OSError as error:
        raise InterpError(f"cannot write the cache folder {str(out)!r}: {error.strerror}") from None


def _lock_folder(out: Path, stack: ExitStack) -> None:
    """Be the only process writing `out` (created if missing) until `stack` closes; a folder
    this call created is removed again if the run stops before writing its manifest."""
    created = not out.exists()
    try:
        stack.enter_context(writer_lock(out, "activation cache"))
    except OSError as error:
        raise InterpError(f"cannot write the cache folder {str(out)!r}: {error.strerror}") from None
    if created:

        def remove_if_unused() -> None:
            if not manifest_path(out).exists():
                (out / WRITER_LOCK_NAME).unlink(missing_ok=True)
                if out.is_dir() and not any(out.iterdir()):
                    out.rmdir()

        stack.callback(remove_if_unused)


def _reusable_shards(out: Path, manifest: dict, block: list[int]) -> set[int]:
    """The recorded shards of `block` that pass every check (size, header, sha256 against the
    manifest, finite values); each damaged one is named on stderr and will be recomputed."""
    wanted = set(block)
    records = [shard for shard in manifest["shards"] if shard["index"] in wanted]
    damaged = {damage.file: damage for damage in damaged_shards(out, manifest, records)}
    for damage in damaged.values():
        print(f"rebuilding {damage.file}: {damage.damage}", file=sys.stderr)
    return {shard["index"] for shard in records if shard["file"] not in damaged}


def token_plan(pair: ModelPair, config: CacheConfig, source: TextSource) -> TokenPlan:
    """The token stream `config` caches from `source` (deterministic for its seed)."""
    return plan_token_stream(
        source,
        pair.tokenizer,
        config.mix,
        config.n_tokens,
        config.ctx,
        config.batch_size,
        config.shard_tokens,
        config.seed,
        config.keep_special,
    )


def check_config_fits_pair(config: CacheConfig, pair: ModelPair) -> None:
    """The config names this pair's models, and its layers exist in them."""
    if (config.base, config.chat) != (pair.base.spec, pair.chat.spec):
        raise InterpError(
            f"config is for {config.base!r}/{config.chat!r} but the pair is "
            f"{pair.base.spec!r}/{pair.chat.spec!r}"
        )
    if max(config.layers) >= pair.n_layers:
        raise InterpError(
            f"unknown layer {max(config.layers)}: the pair has {pair.n_layers} layers"
        )


def build_cache(
    pair: ModelPair,
    config: CacheConfig,
    out: str | Path,
    source: TextSource | None = None,
    progress: bool = True,
    ranks: Ranks | None = None,
    overwrite: bool = False,
) -> dict:
    """Write (or finish) the cache of `config` in `out`; returns the manifest. A cache of another
    config, other weights or another token stream in `out` is refused, or with `overwrite`
    deleted first."""
    out = Path(out)
    ranks = ranks or Ranks()
    source = source or DatasetSource(config.split)
    check_config_fits_pair(config, pair)
    plan = token_plan(pair, config, source)
    fresh = _initial_manifest(
        config, pair, [model_fingerprint(loaded.model) for loaded in pair], plan, source
    )
    _check_existing(out, fresh, overwrite)  # refuse before touching anything
    with ExitStack() as stack:
        if ranks.is_main:
            _lock_folder(out, stack)
        # again: no other writer can change it now
        existing, replace = _check_existing(out, fresh, overwrite)
        ranks.barrier()  # every rank has checked the folder before rank 0 touches it
        if ranks.is_main:
            if replace:
                _remove_cache(out)
            if existing is None:
                _create_folder(out, fresh)
            for stale in out.iterdir():
                if is_temp_file(stale.name):
                    stale.unlink()
        ranks.barrier()
        block = ranks.shard_block(plan.n_shards)
        reusable = _reusable_shards(out, read_manifest(out), block)
        todo = [index for index in block if index not in reusable]
        _write_shards(pair, config, plan, out, todo, fresh, progress and ranks.is_main, ranks)
        ranks.barrier()
        return read_manifest(out)


def _write_shards(
    pair: ModelPair,
    config: CacheConfig,
    plan: TokenPlan,
    out: Path,
    todo: list[int],
    manifest: dict,
    progress: bool,
    ranks: Ranks,
) -> None:
    device = pair.base.device
    # on a GPU a shard is assembled there and leaves it in one asynchronous copy (ShardWriter)
    acts_device = device if device.type == "cuda" else torch.device("cpu")
    runner = BatchRunner(pair, plan, config.layers, config.storage_dtype, acts_device)
    block = ranks.shard_block(plan.n_shards)
    block_tokens = sum(stop - start for start, stop in map(plan.shard_range, block))
    todo_tokens = sum(stop - start for start, stop in map(plan.shard_range, todo))
    metadata = shard_metadata(
        [m["spec"] for m in manifest["models"]], config.layers, config.dtype, config.hash
    )
    with (
        tqdm(
            total=block_tokens,
            initial=block_tokens - todo_tokens,
            unit="tok",
            unit_scale=True,
            desc="cache" if ranks.world == 1 else f"cache rank 0/{ranks.world}",
            disable=not progress,
            smoothing=0.1,
        ) as bar,
        ShardWriter(out, metadata, config.dtype) as writer,
    ):
        for index in todo:
            start, stop = plan.shard_range(index)
            writer.submit(index, stream_rows(runner, start, stop, bar.update))


def shard_metadata(
    specs: Sequence[str], layers: Sequence[int], dtype: str, config_hash: str
) -> dict[str, str]:
    """The `__metadata__` of every shard of a cache (plus each shard's `shard_index`)."""
    return {
        "format": FORMAT,
        "models": json.dumps(list(specs)),
        "roles": json.dumps(list(ROLES)),
        "layers": json.dumps(list(layers)),
        "dtype": dtype,
        "config_hash": config_hash,
    }


@dataclass
class _PendingShard:
    index: int
    tensors: dict[str, Tensor]  # on the host (pinned buffers when the shard came from a GPU)
    sums: tuple[Tensor, Tensor] | None  # `shard_sums` made on the GPU, or None: the worker's job
    copied: "torch.cuda.Event | None"  # recorded after the device-to-host copies
    release: Callable[[], None]  # gives pinned buffers back once the shard is on disk


@dataclass
class _MeasuredShard:
    shard: _PendingShard
    total: np.ndarray  # shard_sums: sum of x (finite: every value is) and sum of ||x||
    norm_total: np.ndarray


@dataclass
class _HashedShard:
    measured: _MeasuredShard
    parts: list[memoryview]
    sha256: "Future[str]"  # computed by the hash thread while the write thread writes the parts


class _PinnedStaging:
    """Device-to-host copies of finished shards without blocking the host: on a side stream,
    into page-locked buffers that are reused once their shard is on disk."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device)
        self._free: dict[tuple, list[Tensor]] = {}
        self._lock = threading.Lock()

    def _buffer(self, like: Tensor) -> Tensor:
        key = (tuple(like.shape), like.dtype)
        with self._lock:
            if self._free.get(key):
                return self._free[key].pop()
        return torch.empty(like.shape, dtype=like.dtype, pin_memory=True)

    def _give_back(self, buffers: list[Tensor]) -> None:
        with self._lock:
            for buffer in buffers:
                self._free.setdefault((tuple(buffer.shape), buffer.dtype), []).append(buffer)

    def stage(self, index: int, tensors: dict[str, Tensor]) -> _PendingShard:
        acts = tensors["acts"]
        sums = shard_sums(acts)  # queued on the GPU behind the forward passes that made acts
        self.stream.wait_stream(torch.cuda.current_stream(acts.device))
        on_device = [acts, *sums]
        with torch.cuda.stream(self.stream):
            host = [self._buffer(tensor) for tensor in on_device]
            for target, tensor in zip(host, on_device, strict=True):
                target.copy_(tensor, non_blocking=True)
                tensor.record_stream(self.stream)  # not reused by the allocator before the copy
            copied = torch.cuda.Event()
            copied.record(self.stream)
        return _PendingShard(
            index,
            {**tensors, "acts": host[0]},
            (host[1], host[2]),
            copied,
            lambda: self._give_back(host),
        )


def _one_torch_thread() -> None:
    """The calling thread's CPU torch ops run on one core (OpenMP's thread count is per thread):
    the writer's statistics take one core beside the forward pass instead of waking a second
    team of threads for each small block."""
    torch.set_num_threads(1)


class ShardWriter:
    """Writes finished shards behind the forward pass. `submit(index, tensors)` returns at once
    (once fewer than WRITE_QUEUE_DEPTH shards wait per stage). Background threads handle shards
    in order: the first computes the statistics (unless the GPU already did) and so tests
    finiteness; then one computes the sha256 of the shard's bytes while another writes the same
    bytes durably and, once both are done, records the shard in the manifest. On a GPU the
    activations are copied to pinned host memory asynchronously (`_PinnedStaging`) and their
    statistics computed on the device. The bytes written are those of `write_shard` and the
    statistics those of `shard_statistics`, as if each shard were written before the next forward.

    A failure in a stage (NaN activations, a full disk, ...) stops them all: the shards after it are
    dropped unwritten, the shards before it stay written and recorded, and the error is raised in
    the caller's thread by the next `submit` or by leaving the `with` block. A shard file exists
    only once written whole; one not yet in the manifest is recomputed by a rerun."""

    def __init__(self, out: Path, metadata: dict[str, str], dtype: str) -> None:
        self.out, self.metadata, self.dtype = out, metadata, dtype
        self._staging: _PinnedStaging | None = None
        self._writing: OrderedWorker[_HashedShard] = OrderedWorker(
            "cache shard write", self._write, WRITE_QUEUE_DEPTH
        )
        self._hashing = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="cache shard hash")
        self._measuring: OrderedWorker[_PendingShard] = OrderedWorker(
            "cache shard statistics", self._measure, WRITE_QUEUE_DEPTH, on_start=_one_torch_thread
        )

    def submit(self, index: int, tensors: dict[str, Tensor]) -> None:
        acts = tensors["acts"]
        if acts.device.type == "cuda":
            if self._staging is None:
                self._staging = _PinnedStaging(acts.device)
            pending = self._staging.stage(index, tensors)
        else:
            pending = _PendingShard(index, tensors, None, None, lambda: None)
        self._measuring.submit(pending)

    def close(self) -> None:
        try:
            self._measuring.close()
        finally:
            try:
                self._writing.close()
            finally:
                self._hashing.shutdown()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            self.close()
            return
        try:  # the shards computed before the error are sound: finish writing them
            self.close()
        except BaseException:  # noqa: S110 - the caller's error is the one to report
            pass

    def _measure(self, shard: _PendingShard) -> None:
        if shard.copied is not None:
            shard.copied.synchronize()
        sums = shard.sums if shard.sums is not None else shard_sums(shard.tensors["acts"])
        total, norm_total = (values.numpy() for values in sums)
        if not np.isfinite(total).all():
            refuse_nonfinite(shard.tensors, shard_name(shard.index), self.dtype)
        parts = shard_parts(shard.tensors, {**self.metadata, "shard_index": str(shard.index)})
        sha256 = self._hashing.submit(parts_sha256, parts)
        self._writing.submit(_HashedShard(_MeasuredShard(shard, total, norm_total), parts, sha256))

    def _write(self, hashed: _HashedShard) -> None:
        measured = hashed.measured
        shard, name = measured.shard, shard_name(measured.shard.index)
        tensors = shard.tensors
        try:
            write_shard_parts(self.out / name, hashed.parts)
            n_bytes = (self.out / name).stat().st_size
        except OSError as error:
            raise InterpError(
                f"cannot write {name} into the cache folder {str(self.out)!r}: "
                f"{error.strerror or error}; the shards before it are kept: rerun the same "
                "command to resume"
            ) from None
        record = {
            "index": shard.index,
            "file": name,
            "n_tokens": len(tensors["token_ids"]),
            "n_bytes": n_bytes,
            "sha256": hashed.sha256.result(),
            "first_seq_id": int(tensors["seq_ids"][0]),
            "last_seq_id": int(tensors["seq_ids"][-1]),
        }
        record_shard(self.out, record, measured.total, measured.norm_total)
        shard.release()


def stream_rows(
    runner: BatchRunner, start: int, stop: int, progress: Callable[[int], object] | None = None
) -> dict[str, Tensor]:
    """Tokens [start, stop) of the plan's stream: `acts` [n, runner models, n_layers, d] in the
    runner's storage dtype on its `acts_device`, `token_ids`, `seq_ids`, `positions`; the forward
    batches that overlap the range are run (a batch shared with the previous range is reused).
    `progress(n)` is told each batch's contribution. A shard is one such range; so is a window of
    a streamed training run (crosscoders.model_stream)."""
    plan, pair = runner.plan, runner.pair
    shape = (len(runner.roles), len(runner.layers), pair.d_model)
    tensors = {
        "acts": torch.empty((stop - start, *shape), dtype=runner.dtype, device=runner.acts_device),
        "token_ids": torch.empty(stop - start, dtype=torch.int32),
        "seq_ids": torch.empty(stop - start, dtype=torch.int64),
        "positions": torch.empty(stop - start, dtype=torch.int32),
    }
    for batch in plan.batches_for(start, stop):
        batch_start = plan.batch_start(batch)
        rows = runner.rows(batch)
        low = max(start, batch_start)
        high = min(stop, batch_start + len(rows["token_ids"]))
        for name, values in rows.items():
            tensors[name][low - start : high - start] = values[
                low - batch_start : high - batch_start
            ]
        if progress is not None:
            progress(high - low)
    return tensors


def refuse_nonfinite(tensors: dict[str, Tensor], name: str, dtype: str) -> None:
    """The models' activations must be finite to be cached (a NaN would reach every statistic
    and dictionary trained on the cache; fp16 storage overflows on massive activations)."""
    finite = tensors["acts"].isfinite().flatten(1).all(1)
    if bool(finite.all()):
        return
    row = int((~finite).nonzero()[0, 0])
    raise InterpError(
        f"the models produced NaN or inf activations for sequence "
        f"{int(tensors['seq_ids'][row])} at position {int(tensors['positions'][row])} (row {row} "
        f"of {name}, stored as {dtype}); nothing was written for it: with --dtype fp16 large "
        "activations overflow, use bf16 or fp32"
    )
