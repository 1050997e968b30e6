"""`manifest.json`: the one source of truth of a cache folder.

Layout (all JSON):
- `format`, `version`, `config` (a `CacheConfig`), `config_hash`
- `models`: [{role, spec, fingerprint, family, d_model, n_layers}] in cache order (base, chat)
- `layers`, `hook_names`, `d_model`, `dtype` (storage), `model_dtype` (what the models ran in,
  interp.models.dtype_name; a manifest without it is from when they always ran in fp32),
  `excluded_token_ids`, `n_tokens`, `n_shards`
- `dataset`: source, mixture with per-recipe origin/sequences/tokens/passes, `n_sequences`,
  `plan_sha256` (fingerprint of the exact token stream)
- `shards`: [{index, file, n_tokens, sha256, first_seq_id, last_seq_id}], sorted by index
- `stats`: `count`, `sum` [n_models][n_layers][d], `norm_sum` [n_models][n_layers] (running
  totals, float64) and the derived `mean` and `mean_norm` (= E||x||_2 per model/layer)
- `complete`: all shards written

It is rewritten atomically (interp.fileio: unique tmp, fsync, rename) after each shard, under an
exclusive `flock` on the folder so that several ranks can record their shards in the same file.
Each shard record also holds `n_bytes` (caches written before it have none; the header's offsets
give the expected size then).
"""

import json
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.cache.shard import memmap_tensor, payload_to_float32, read_header
from interp.errors import InterpError
from interp.fileio import atomic_write_json, exclusive_lock

MANIFEST_NAME = "manifest.json"
SHARD_GLOB = "shard-[0-9]*.safetensors"
REBUILD_WITH_OVERWRITE = (
    "rerun the `interp cache` command that wrote it with --overwrite to rebuild it, or delete "
    "the folder"
)
FORMAT = "interp-activation-cache"
VERSION = 1


class ManifestDamaged(InterpError):
    """The folder holds shards but its manifest is gone or unreadable."""


def manifest_path(folder: Path) -> Path:
    return folder / MANIFEST_NAME


def read_manifest(folder: Path) -> dict:
    path = manifest_path(folder)
    if not path.is_file():
        if Path(folder).is_dir() and any(Path(folder).glob(SHARD_GLOB)):
            raise ManifestDamaged(
                f"cache {str(folder)!r} is damaged: it holds shards but no {MANIFEST_NAME}; "
                f"{REBUILD_WITH_OVERWRITE}"
            )
        raise InterpError(f"{str(folder)!r} is not an activation cache: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestDamaged(
            f"cache {str(folder)!r} is damaged: {MANIFEST_NAME} is not valid JSON ({error}); "
            f"{REBUILD_WITH_OVERWRITE}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InterpError(f"{str(path)!r} is not an {FORMAT} manifest")
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write_json(manifest_path(folder), manifest, indent=1)


def manifest_lock(folder: Path) -> AbstractContextManager[None]:
    """Exclusive lock on the cache folder (flock on its directory handle)."""
    return exclusive_lock(folder)


def empty_stats(n_models: int, n_layers: int, d_model: int) -> dict:
    return {
        "count": 0,
        "sum": np.zeros((n_models, n_layers, d_model)).tolist(),
        "norm_sum": np.zeros((n_models, n_layers)).tolist(),
        "mean": np.zeros((n_models, n_layers, d_model)).tolist(),
        "mean_norm": np.zeros((n_models, n_layers)).tolist(),
    }


def add_stats(stats: dict, count: int, total: np.ndarray, norm_total: np.ndarray) -> dict:
    """Add one shard's totals (sum of x, sum of ||x||) and refresh the means."""
    count_all = stats["count"] + count
    sums = np.asarray(stats["sum"]) + total
    norm_sums = np.asarray(stats["norm_sum"]) + norm_total
    return {
        "count": count_all,
        "sum": sums.tolist(),
        "norm_sum": norm_sums.tolist(),
        "mean": (sums / max(count_all, 1)).tolist(),
        "mean_norm": (norm_sums / max(count_all, 1)).tolist(),
    }


STATS_BLOCK_ROWS = 256  # rows per float64 partial sum on the CPU (a block stays in the cache)


def shard_sums(
    acts: Float[Tensor, "n n_models n_layers d"],
) -> tuple[Float[Tensor, "n_models n_layers d"], Float[Tensor, "n_models n_layers"]]:
    """(sum of x, sum of ||x||_2) over tokens, per model/layer, in float64, from stored values,
    computed where `acts` lives (the cache writer runs it on the GPU without waiting for it).
    The sum of x is finite exactly when every value is (float64 cannot overflow on a sum of
    float32 values), which is how the writer tests finiteness for free.

    On the CPU the rows are summed in blocks of STATS_BLOCK_ROWS, block totals added in order:
    each block's float32 and float64 copies stay in the processor's cache (one pass over the
    shard; converting a whole 128 MiB shard to float64 first cost ~4x more), and the result does
    not depend on the thread count. A float64 sum of a shard's bf16 values is exact, so the same
    in any order, while they span at most 29 binades (53 bits less the 8 of a value and the 16
    of the token count; fp16: 26)."""
    if acts.device.type != "cpu":
        values = acts.float()
        total = values.sum(dim=0, dtype=torch.float64)
        norm_total = torch.linalg.vector_norm(values, dim=-1).sum(dim=0, dtype=torch.float64)
        return total, norm_total
    total = torch.zeros(acts.shape[1:], dtype=torch.float64)
    norm_total = torch.zeros(acts.shape[1:-1], dtype=torch.float64)
    for block in acts.split(STATS_BLOCK_ROWS):
        values = block.float()
        total += values.sum(dim=0, dtype=torch.float64)
        norm_total += torch.linalg.vector_norm(values, dim=-1).sum(dim=0, dtype=torch.float64)
    return total, norm_total


def shard_statistics(
    acts: Float[Tensor, "n n_models n_layers d"],
) -> tuple[np.ndarray, np.ndarray]:
    """`shard_sums` as numpy arrays."""
    total, norm_total = shard_sums(acts)
    return total.cpu().numpy(), norm_total.cpu().numpy()


def stats_of_shards(folder: Path, manifest: dict) -> dict:
    """The statistics summed again, in index order, over every recorded shard's stored values."""
    stats = empty_stats(len(manifest["models"]), len(manifest["layers"]), manifest["d_model"])
    for record in manifest["shards"]:
        tensors, _ = read_header(folder / record["file"])
        rows = np.array(memmap_tensor(folder / record["file"], tensors["acts"]))
        total, norm_total = shard_statistics(payload_to_float32(rows, tensors["acts"].dtype))
        stats = add_stats(stats, record["n_tokens"], total, norm_total)
    return stats


def record_shard(folder: Path, record: dict, total: np.ndarray, norm_total: np.ndarray) -> dict:
    """Add a finished shard to the manifest on disk (under the lock); returns the new manifest.
    A shard rebuilt over a damaged one keeps its record if its bytes are the recorded ones (its
    statistics are counted already); other bytes replace the record, and the statistics are
    summed again over every shard (the damaged shard's share cannot be subtracted)."""
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        recorded = {shard["index"]: shard for shard in manifest["shards"]}
        old = recorded.get(record["index"])
        if old is not None and old["sha256"] == record["sha256"]:
            return manifest
        recorded[record["index"]] = record
        manifest["shards"] = [recorded[index] for index in sorted(recorded)]
        if old is None:
            manifest["stats"] = add_stats(manifest["stats"], record["n_tokens"], total, norm_total)
        else:
            manifest["stats"] = stats_of_shards(folder, manifest)
        manifest["complete"] = len(manifest["shards"]) == manifest["n_shards"]
        write_manifest(folder, manifest)
        return manifest
