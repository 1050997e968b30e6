"""What an activation cache is made of: one frozen, JSON round-tripping config and its hash.

The hash covers every field that changes a single byte of the cache (pair, layers, mixture,
token count, context, batch size, storage dtype, seed, special-token rule, shard size, split):
a folder whose manifest holds another hash is refused instead of silently mixed.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch

from interp.errors import InterpError

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}
SHARD_TARGET_BYTES = 128 * 2**20  # default shard size: ~128 MiB of activations
SHARD_TOKEN_MULTIPLE = 1024


def canonical_dtype(name: str) -> str:
    """`bf16` -> `bfloat16`, ...; an InterpError for anything but bf16, fp16, fp32."""
    canonical = DTYPE_ALIASES.get(name.lower(), name.lower())
    if canonical not in STORAGE_DTYPES:
        raise InterpError(
            f"unknown cache dtype {name!r}: expected one of bf16, fp16, fp32 "
            f"(or {', '.join(STORAGE_DTYPES)})"
        )
    return canonical


def parse_mix(text: "str | Mapping[str, float]") -> tuple[tuple[str, float], ...]:
    """`wiki:0.5,chat:0.5` (or the dict {"wiki": 0.5, "chat": 0.5}) -> (("wiki", 0.5),
    ("chat", 0.5)); a bare `wiki` has weight 1. Weights are token shares, normalised to sum
    to 1."""
    if isinstance(text, Mapping):
        text = ",".join(f"{name}:{weight}" for name, weight in text.items())
    entries: list[tuple[str, float]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, colon, weight_text = part.rpartition(":")
        if not colon or (name == "hf" and "/" in weight_text):  # a bare `hf:owner/name`
            name, weight_text = part, ""
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise InterpError(
                f"bad mixture entry {part!r}: expected recipe:weight such as wiki:0.5"
            ) from None
        if not weight > 0:
            raise InterpError(f"bad mixture weight in {part!r}: expected a positive number")
        entries.append((name.strip(), weight))
    if not entries:
        raise InterpError(f"empty dataset mixture {text!r}: expected e.g. wiki:0.5,chat:0.5")
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise InterpError(f"recipe repeated in mixture {text!r}: give each recipe once")
    total = sum(weight for _, weight in entries)
    return tuple((name, weight / total) for name, weight in entries)


def format_mix(mix: tuple[tuple[str, float], ...]) -> str:
    return ",".join(f"{name}:{weight:g}" for name, weight in mix)


def default_shard_tokens(n_models: int, n_layers: int, d_model: int, dtype: str) -> int:
    """Tokens per shard so that a shard holds about SHARD_TARGET_BYTES of activations."""
    bytes_per_token = n_models * n_layers * d_model * STORAGE_DTYPES[dtype].itemsize
    tokens = SHARD_TARGET_BYTES // bytes_per_token // SHARD_TOKEN_MULTIPLE * SHARD_TOKEN_MULTIPLE
    return max(SHARD_TOKEN_MULTIPLE, tokens)


@dataclass(frozen=True)
class CacheConfig:
    """Everything that determines the bytes of a cache. `layers` are resolved block indices."""

    base: str
    chat: str
    layers: tuple[int, ...]
    mix: tuple[tuple[str, float], ...]
    n_tokens: int
    shard_tokens: int
    ctx: int = 128
    batch_size: int = 8
    dtype: str = "bfloat16"
    seed: int = 0
    keep_special: bool = False
    split: str = "train"

    def __post_init__(self) -> None:
        for name in ("n_tokens", "shard_tokens", "ctx", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise InterpError(f"bad {name} {value!r}: expected a positive integer")
        if not self.layers:
            raise InterpError("no layer given: expected at least one layer")
        canonical_dtype(self.dtype)

    def to_json(self) -> dict[str, object]:
        payload = asdict(self)
        payload["layers"] = list(self.layers)
        payload["mix"] = [[name, weight] for name, weight in self.mix]
        return payload

    @classmethod
    def from_json(cls, payload: dict) -> "CacheConfig":
        known = {field.name for field in fields(cls)}
        values = {key: value for key, value in payload.items() if key in known}
        values["layers"] = tuple(values["layers"])
        values["mix"] = tuple((str(name), float(weight)) for name, weight in values["mix"])
        return cls(**values)

    @property
    def hash(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def storage_dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.dtype]

    @property
    def n_shards(self) -> int:
        return -(-self.n_tokens // self.shard_tokens)

    def differences(self, other: "CacheConfig") -> list[str]:
        """`field: mine != theirs` for each differing field (for refusal messages)."""
        mine, theirs = self.to_json(), other.to_json()
        return [
            f"{key}: {theirs[key]!r} != {mine[key]!r}" for key in mine if mine[key] != theirs[key]
        ]
