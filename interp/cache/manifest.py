"""`manifest.json`: the one source of truth of a cache folder.

Layout (all JSON):
- `format`, `version`, `config` (a `CacheConfig`), `config_hash`
- `models`: [{role, spec, fingerprint, family, d_model, n_layers}] in cache order (base, chat)
- `layers`, `hook_names`, `d_model`, `dtype`, `excluded_token_ids`, `n_tokens`, `n_shards`
- `dataset`: source, mixture with per-recipe origin/sequences/tokens/passes, `n_sequences`,
  `plan_sha256` (fingerprint of the exact token stream)
- `shards`: [{index, file, n_tokens, sha256, first_seq_id, last_seq_id}], sorted by index
- `stats`: `count`, `sum` [n_models][n_layers][d], `norm_sum` [n_models][n_layers] (running
  totals, float64) and the derived `mean` and `mean_norm` (= E||x||_2 per model/layer)
- `complete`: all shards written

It is rewritten atomically (tmp + rename) after each shard, under an exclusive `flock` on the
folder so that several ranks can record their shards in the same file.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from interp.cache.shard import write_atomic
from interp.errors import InterpError

MANIFEST_NAME = "manifest.json"
FORMAT = "interp-activation-cache"
VERSION = 1


def manifest_path(folder: Path) -> Path:
    return folder / MANIFEST_NAME


def read_manifest(folder: Path) -> dict:
    path = manifest_path(folder)
    if not path.is_file():
        raise InterpError(f"{str(folder)!r} is not an activation cache: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InterpError(f"{str(path)!r} is not valid JSON ({error})") from None
    if manifest.get("format") != FORMAT:
        raise InterpError(f"{str(path)!r} is not an {FORMAT} manifest")
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    write_atomic(manifest_path(folder), (json.dumps(manifest, indent=1) + "\n").encode())


@contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on the cache folder (flock on its directory handle)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


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


def record_shard(folder: Path, record: dict, total: np.ndarray, norm_total: np.ndarray) -> dict:
    """Add a finished shard to the manifest on disk (under the lock); returns the new manifest."""
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        if any(shard["index"] == record["index"] for shard in manifest["shards"]):
            return manifest
        manifest["shards"] = sorted([*manifest["shards"], record], key=lambda s: s["index"])
        manifest["stats"] = add_stats(manifest["stats"], record["n_tokens"], total, norm_total)
        manifest["complete"] = len(manifest["shards"]) == manifest["n_shards"]
        write_manifest(folder, manifest)
        return manifest
