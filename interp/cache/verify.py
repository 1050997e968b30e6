"""Is every shard exactly what the manifest says it is? The one set of checks behind
`interp cache verify PATH`, the reader (on open, on every read, checksums where a training run
starts), and the writer's re-check of the shards it reuses on resume.

Damage, one line per shard (`ShardDamaged`), each naming the shard and what to do:
- missing: the file is gone;
- unreadable safetensors header: the header does not parse (e.g. a flipped header byte);
- a tensor absent, or of another dtype/shape than the manifest implies;
- truncated / wrong size: the file is shorter or longer than the manifest's `n_bytes` (or, for
  caches without it, than the header's offsets);
- contents changed: the sha256 differs from the manifest's (e.g. a flipped payload byte);
- NaN or inf activations.

What each check costs: the structural ones (a `stat` and the header) are cheap and run on every
open; sha256 and the finiteness scan read every byte (sha256: 0.32-0.38 GB/s on one core of the
development machine, measured on the 30.9 MB demo shard; `checksum_workers` shards are hashed in
parallel, hashlib releases the GIL).
"""

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from torch import Tensor

from interp.builtin_models import sha256_file
from interp.cache.config import STORAGE_DTYPES
from interp.cache.manifest import REBUILD_WITH_OVERWRITE, ManifestDamaged, read_manifest
from interp.cache.shard import (
    PAYLOAD_DTYPES,
    SAFETENSORS_DTYPE_TAG,
    TensorEntry,
    memmap_tensor,
    payload_to_float32,
    read_header,
)
from interp.errors import InterpError

CHECK_ROWS = 8192  # rows of activations checked for NaN/inf at a time
REBUILD = "rerun the `interp cache` command that wrote the cache (same options) to rebuild it"


class ShardDamaged(InterpError):
    """One damaged shard: which file, what is wrong with it, and what to do."""

    def __init__(self, folder: Path, file: str, damage: str) -> None:
        self.folder, self.file, self.damage = Path(folder), file, damage
        super().__init__(f"cache {str(folder)!r}: {file} is damaged, {damage}: {REBUILD}")

    @property
    def line(self) -> str:
        """The shard's line in `interp cache verify`."""
        return f"{self.file}: {self.damage}: {REBUILD}"


def checksum_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def expected_tensors(manifest: dict, n_tokens: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """(safetensors dtype tag, shape) of each tensor of a shard of `n_tokens` tokens."""
    acts_shape = (n_tokens, len(manifest["models"]), len(manifest["layers"]), manifest["d_model"])
    return {
        "acts": (SAFETENSORS_DTYPE_TAG[STORAGE_DTYPES[manifest["dtype"]]], acts_shape),
        "token_ids": ("I32", (n_tokens,)),
        "seq_ids": ("I64", (n_tokens,)),
        "positions": ("I32", (n_tokens,)),
    }


def open_shard(folder: Path, manifest: dict, record: dict) -> dict[str, TensorEntry]:
    """The shard's tensors after the cheap checks (file there, size, header, dtypes and shapes
    against the manifest); `ShardDamaged` otherwise."""
    folder = Path(folder)
    path = folder / record["file"]

    def damaged(damage: str) -> ShardDamaged:
        return ShardDamaged(folder, record["file"], damage)

    if not path.is_file():
        raise damaged("missing")
    size = path.stat().st_size
    recorded_size = record.get("n_bytes")
    try:
        tensors, _ = read_header(path)
    except (ValueError, OSError) as error:
        if recorded_size is not None and size < recorded_size:
            raise damaged(f"truncated ({size} of {recorded_size} bytes)") from None
        raise damaged(f"unreadable safetensors header ({error})") from None
    n = record["n_tokens"]
    for name, (dtype, shape) in expected_tensors(manifest, n).items():
        entry = tensors.get(name)
        if entry is None:
            raise damaged(f"no tensor {name!r} in its header")
        if (entry.dtype, entry.shape) != (dtype, shape):
            raise damaged(
                f"{name} is {entry.dtype}{list(entry.shape)}, expected {dtype}{list(shape)} "
                f"({n} tokens in the manifest)"
            )
        itemsize = np.dtype(PAYLOAD_DTYPES[entry.dtype]).itemsize
        if entry.nbytes != int(np.prod(entry.shape)) * itemsize or entry.offset < 8:
            raise damaged(f"the header's byte offsets of {name} do not fit its shape")
    expected_size = max(entry.offset + entry.nbytes for entry in tensors.values())
    if recorded_size is not None:
        expected_size = recorded_size
    if size < expected_size:
        raise damaged(f"truncated ({size} of {expected_size} bytes)")
    if size > expected_size:
        raise damaged(f"{size} bytes, expected {expected_size}")
    return tensors


def check_checksum(folder: Path, record: dict) -> None:
    """`ShardDamaged` unless the file's sha256 is the manifest's."""
    found = sha256_file(Path(folder) / record["file"])
    if found != record["sha256"]:
        raise ShardDamaged(
            folder,
            record["file"],
            f"contents changed (sha256 {found[:12]}..., the manifest records "
            f"{record['sha256'][:12]}...)",
        )


def first_nonfinite_row(values: Tensor) -> int | None:
    """Index of the first row (along dim 0) holding NaN or inf, None if all are finite.

    A sum of finite floats is never NaN (it may overflow to inf), and NaN or inf in a sum makes
    it non-finite, so a finite sum proves every value finite: one pass, ~170x cheaper than
    `isfinite` on a [512, 2, 1, 640] float32 batch (0.04 vs 6.7 ms, one thread). Only a
    non-finite sum is resolved value by value."""
    if bool(values.sum().isfinite()):
        return None
    finite = values.isfinite()
    if bool(finite.all()):
        return None  # finite values whose sum overflowed
    return int((~finite).flatten(1).any(1).nonzero()[0, 0])


def check_finite(folder: Path, record: dict, tensors: dict[str, TensorEntry]) -> None:
    """`ShardDamaged` if any activation of the shard is NaN or inf (reads it CHECK_ROWS rows at
    a time)."""
    entry = tensors["acts"]
    acts = memmap_tensor(Path(folder) / record["file"], entry)
    for start in range(0, record["n_tokens"], CHECK_ROWS):
        rows = np.array(acts[start : start + CHECK_ROWS])
        bad = first_nonfinite_row(payload_to_float32(rows, entry.dtype))
        if bad is not None:
            raise ShardDamaged(
                folder, record["file"], f"NaN or inf activations (first at row {start + bad})"
            )


def shard_damage(
    folder: Path, manifest: dict, record: dict, checksum: bool = True, finite: bool = True
) -> ShardDamaged | None:
    """What is wrong with one shard, None if nothing: the cheap checks, then the sha256, then
    the finiteness scan."""
    try:
        tensors = open_shard(folder, manifest, record)
        if checksum:
            check_checksum(folder, record)
        if finite:
            check_finite(folder, record, tensors)
    except ShardDamaged as damage:
        return damage
    return None


def damaged_shards(
    folder: Path,
    manifest: dict,
    records: Iterable[dict],
    checksum: bool = True,
    finite: bool = True,
) -> list[ShardDamaged]:
    """`shard_damage` of every record, `checksum_workers()` shards at a time, in record order."""

    def check(record: dict) -> ShardDamaged | None:
        return shard_damage(folder, manifest, record, checksum, finite)

    records = list(records)
    with ThreadPoolExecutor(max_workers=min(checksum_workers(), max(1, len(records)))) as pool:
        return [damage for damage in pool.map(check, records) if damage is not None]


def verify_cache(folder: str | Path) -> list[str]:
    """Every problem found, one line each naming the shard (or the manifest) and what to do; an
    empty list for a sound cache. A folder that is no cache at all is an `InterpError`."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except ManifestDamaged as error:
        return [str(error)]
    problems = [damage.line for damage in damaged_shards(folder, manifest, manifest["shards"])]
    written = sum(shard["n_tokens"] for shard in manifest["shards"])
    if not manifest["complete"]:
        problems.append(
            f"incomplete: {len(manifest['shards'])}/{manifest['n_shards']} shards written "
            "(rerun the same `interp cache` command to finish)"
        )
    elif written != manifest["n_tokens"]:
        problems.append(
            f"shards hold {written} tokens, the manifest promises {manifest['n_tokens']}: "
            f"{REBUILD_WITH_OVERWRITE}"
        )
    return problems
