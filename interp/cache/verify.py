"""`interp cache verify PATH`: is every shard exactly what the manifest says it is?

Checks, per shard: the file exists, its sha256 matches, the safetensors header parses, the four
tensors have the expected shapes and dtypes, the token count matches, and the activations hold no
NaN or inf; per cache: the shard list is complete and the token counts add up to `n_tokens`.
"""

from pathlib import Path

import numpy as np

from interp.builtin_models import sha256_file
from interp.cache.config import STORAGE_DTYPES
from interp.cache.manifest import read_manifest
from interp.cache.shard import SAFETENSORS_DTYPE_TAG, memmap_tensor, payload_to_float32, read_header

CHECK_ROWS = 8192  # rows of activations checked for NaN/inf at a time


def _check_shard(folder: Path, manifest: dict, shard: dict) -> list[str]:
    path = folder / shard["file"]
    if not path.is_file():
        return [f"{shard['file']}: missing"]
    problems = []
    if sha256_file(path) != shard["sha256"]:
        problems.append(f"{shard['file']}: sha256 mismatch (file changed or truncated)")
    try:
        tensors, _ = read_header(path)
    except (ValueError, UnicodeDecodeError, OSError) as error:
        return [*problems, f"{shard['file']}: unreadable safetensors header ({error})"]
    n = shard["n_tokens"]
    acts_shape = (n, len(manifest["models"]), len(manifest["layers"]), manifest["d_model"])
    expected = {
        "acts": (SAFETENSORS_DTYPE_TAG[STORAGE_DTYPES[manifest["dtype"]]], acts_shape),
        "token_ids": ("I32", (n,)),
        "seq_ids": ("I64", (n,)),
        "positions": ("I32", (n,)),
    }
    size = path.stat().st_size
    for name, (dtype, shape) in expected.items():
        entry = tensors.get(name)
        if entry is None:
            problems.append(f"{shard['file']}: no tensor {name!r}")
        elif (entry.dtype, entry.shape) != (dtype, shape):
            problems.append(
                f"{shard['file']}: {name} is {entry.dtype}{list(entry.shape)}, "
                f"expected {dtype}{list(shape)} ({n} tokens in the manifest)"
            )
        elif entry.offset + entry.nbytes > size:
            problems.append(f"{shard['file']}: {name} runs past the end of the file (truncated)")
    if problems:
        return problems
    acts = memmap_tensor(path, tensors["acts"])
    for start in range(0, n, CHECK_ROWS):
        values = payload_to_float32(
            np.array(acts[start : start + CHECK_ROWS]), tensors["acts"].dtype
        )
        if not values.isfinite().all():
            bad = start + int((~values.isfinite()).flatten(1).any(1).nonzero()[0, 0])
            return [f"{shard['file']}: NaN or inf activations (first at row {bad})"]
    return []


def verify_cache(folder: str | Path) -> list[str]:
    """Every problem found, one line each naming the shard; an empty list for a sound cache."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = []
    for shard in manifest["shards"]:
        problems.extend(_check_shard(folder, manifest, shard))
    written = sum(shard["n_tokens"] for shard in manifest["shards"])
    if not manifest["complete"]:
        problems.append(
            f"incomplete: {len(manifest['shards'])}/{manifest['n_shards']} shards written "
            "(rerun the same `interp cache` command to finish)"
        )
    elif written != manifest["n_tokens"]:
        problems.append(
            f"shards hold {written} tokens, the manifest promises {manifest['n_tokens']}"
        )
    return problems
