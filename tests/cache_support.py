"""Shared inputs of the activation-cache tests: documents in the tiny models' vocabulary, and
every kind of damage a shard can suffer."""

import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file
from tiny_models import WORDS

from interp.cache import InMemorySource
from interp.cache.shard import read_header, write_shard

VOCAB_WORDS = WORDS[3:]  # w0, w1, ... (skip "user", "model", "\n")


def documents(count: int, seed: int = 0, max_words: int = 50) -> list[str]:
    """Distinct random documents of 1..max_words tiny-vocabulary words."""
    rng = np.random.default_rng(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        length = int(rng.integers(1, max_words + 1))
        found[" ".join(rng.choice(VOCAB_WORDS, size=length))] = None
    return list(found)


def mixed_source(count: int = 40) -> InMemorySource:
    """`wiki` (plain documents) and `chat` (prompt/response pairs rendered with the template)."""
    plain = documents(count, seed=1)
    prompts, responses = documents(count, seed=2, max_words=12), documents(count, seed=3)
    return InMemorySource(
        plain={"wiki": plain}, chats={"chat": list(zip(prompts, responses, strict=True))}
    )


# Each kind of damage a shard can suffer -> the words naming it in `interp cache verify`, in the
# reader's errors and in the writer's "rebuilding ..." line.
DAMAGE_KINDS = {
    "truncated": "truncated",
    "flipped payload byte": "contents changed",
    "flipped header byte": "unreadable safetensors header",
    "NaN activations": "NaN or inf activations",
    "deleted": "missing",
}


def damage_shard(cache_dir: Path, kind: str, index: int = 1) -> str:
    """Damage shard `index` of the cache in `cache_dir` in one of the `DAMAGE_KINDS` ways;
    returns its file name. NaN activations get a matching sha256 in the manifest (what a writer
    that stored them would have recorded), so only the finiteness checks can catch them."""
    name = f"shard-{index:05d}.safetensors"
    path = cache_dir / name
    data = bytearray(path.read_bytes())
    tensors, metadata = read_header(path)
    if kind == "truncated":
        path.write_bytes(bytes(data[:-100]))
    elif kind == "flipped payload byte":
        data[tensors["acts"].offset + 1000] ^= 0x01  # the lowest mantissa bit of one activation
        path.write_bytes(bytes(data))
    elif kind == "flipped header byte":
        data[data.index(b'"shape"') + 1] ^= 0x01  # "shape" -> "rhape": the JSON still parses
        path.write_bytes(bytes(data))
    elif kind == "NaN activations":
        values = load_file(path)
        values["acts"][42, 1, 0, 3] = float("nan")
        sha = write_shard(path, values, metadata)
        manifest = json.loads((cache_dir / "manifest.json").read_text())
        manifest["shards"][index]["sha256"] = sha
        (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    elif kind == "deleted":
        path.unlink()
    else:
        raise ValueError(f"unknown damage {kind!r}: expected one of {list(DAMAGE_KINDS)}")
    return name
