"""One shard file: `shard-00000.safetensors` with `acts` [n_tokens, n_models, n_layers, d],
`token_ids` int32, `seq_ids` int64, `positions` int32 and a `__metadata__` header naming models,
layers and dtype. Written to `.tmp`, fsynced, then renamed, so a shard that exists is whole."""

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SHARD_TENSORS = ("acts", "token_ids", "seq_ids", "positions")
TMP_SUFFIX = ".tmp"
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
    """Parse a safetensors header without reading the payload: (tensors, metadata)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100 * 2**20:
            raise ValueError(f"header length {length} is implausible")
        header = json.loads(handle.read(length))
    metadata = header.pop("__metadata__", {}) or {}
    base = 8 + length
    tensors = {
        name: TensorEntry(
            dtype=entry["dtype"],
            shape=tuple(entry["shape"]),
            offset=base + entry["data_offsets"][0],
            nbytes=entry["data_offsets"][1] - entry["data_offsets"][0],
        )
        for name, entry in header.items()
    }
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


def _fsync_dir(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to `path.tmp`, fsync, rename over `path`, fsync the folder."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def serialize_shard(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of a shard, byte-for-byte deterministic: the header lists metadata
    and tensors in a fixed order (the safetensors library orders its header through a hash map,
    which would make equal shards hash differently)."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    payloads = []
    offset = 0
    for name in SHARD_TENSORS:
        tensor = tensors[name].contiguous()
        payload = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        tag = SAFETENSORS_DTYPE_TAG.get(tensor.dtype) or SAFETENSORS_INT_TAG[tensor.dtype]
        header[name] = {
            "dtype": tag,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(payload)],
        }
        payloads.append(payload)
        offset += len(payload)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the payload starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(payloads)


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write one shard atomically; returns its sha256."""
    data = serialize_shard(tensors, metadata)
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()
