"""One shard file: `shard-00000.safetensors` with `acts` [n_tokens, n_models, n_layers, d],
`token_ids` int32, `seq_ids` int64, `positions` int32 and a `__metadata__` header naming models,
layers and dtype. Written through `interp.fileio.atomic_output` (unique temp name, fsync,
rename), so a shard that exists was written whole; damage after the fact (a truncated copy, a
flipped byte) is what interp.cache.verify looks for."""

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from interp.fileio import atomic_output

SHARD_TENSORS = ("acts", "token_ids", "seq_ids", "positions")
# safetensors dtype tags -> numpy dtype of the raw payload (bf16 is read as its uint16 bits)
PAYLOAD_DTYPES = {
    "BF16": np.uint16,
    "F16": np.float16,
    "F32": np.float32,
    "I32": np.int32,
    "I64": np.int64,
}
SAFETENSORS_DTYPE_TAG = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
SAFETENSORS_INT_TAG = {torch.int32: "I32", torch.int64: "I64"}


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


@dataclass(frozen=True)
class TensorEntry:
    dtype: str  # safetensors tag, e.g. BF16
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the payload in the file
    nbytes: int


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse a safetensors header without reading the payload: (tensors, metadata). Any malformed
    header (too short, not JSON, an entry without dtype/shape/offsets) is a `ValueError`."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise ValueError(f"{size} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", start)
        if length > min(100 * 2**20, size - 8):
            raise ValueError(f"header length {length} is implausible for a file of {size} bytes")
        text = handle.read(length)
    try:
        header = json.loads(text)
        metadata = header.pop("__metadata__", {}) or {}
        base = 8 + length
        tensors = {
            name: TensorEntry(
                dtype=str(entry["dtype"]),
                shape=tuple(int(n) for n in entry["shape"]),
                offset=base + int(entry["data_offsets"][0]),
                nbytes=int(entry["data_offsets"][1]) - int(entry["data_offsets"][0]),
            )
            for name, entry in header.items()
        }
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise ValueError(f"malformed header ({type(error).__name__}: {error})") from None
    return tensors, metadata


def memmap_tensor(path: Path, entry: TensorEntry) -> np.ndarray:
    """A read-only memory map of one tensor's payload (bf16 as uint16 bits)."""
    return np.memmap(
        path, dtype=PAYLOAD_DTYPES[entry.dtype], mode="r", offset=entry.offset, shape=entry.shape
    )


def payload_to_float32(rows: np.ndarray, dtype_tag: str) -> torch.Tensor:
    """Raw payload rows (a numpy copy) -> a float32 tensor."""
    if dtype_tag == "BF16":
        return torch.from_numpy(rows.view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(rows).float()


def shard_parts(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> list[memoryview]:
    """The safetensors bytes of a shard as [header, payload of each tensor], byte-for-byte
    deterministic, without copying the payloads (each part views its tensor's memory, so the
    tensors must not change until the parts are written): the header lists metadata and tensors
    in a fixed order (the safetensors library orders its header through a hash map, which would
    make equal shards hash differently)."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    payloads = []
    offset = 0
    for name in SHARD_TENSORS:
        tensor = tensors[name].contiguous()
        payload = memoryview(
            tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else b""
        )
        tag = SAFETENSORS_DTYPE_TAG.get(tensor.dtype) or SAFETENSORS_INT_TAG[tensor.dtype]
        header[name] = {
            "dtype": tag,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + payload.nbytes],
        }
        payloads.append(payload)
        offset += payload.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the payload starts 8-byte aligned
    return [memoryview(struct.pack("<Q", len(text)) + text), *payloads]


def serialize_shard(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of a shard (`shard_parts` joined)."""
    return b"".join(shard_parts(tensors, metadata))


def parts_sha256(parts: list[memoryview]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)  # hashlib releases the GIL on large buffers
    return digest.hexdigest()


def write_shard_parts(path: Path, parts: list[memoryview]) -> None:
    """Write a shard's parts atomically (interp.fileio.atomic_output: unique temp name, fsync,
    rename, fsync the folder): a shard that exists was written whole."""
    with atomic_output(path) as tmp, tmp.open("wb") as handle:
        for part in parts:
            handle.write(part)


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write one shard atomically; returns its sha256."""
    parts = shard_parts(tensors, metadata)
    write_shard_parts(path, parts)
    return parts_sha256(parts)
