"""What the activation-cache writer costs beyond the disk: the writer fed by a forward pass that
costs nothing, against writing the same bytes sequentially to the same disk. Prints one JSON
object.

`writer`: `interp.cache.writer.ShardWriter` (finiteness, statistics, sha256, durable shard write,
manifest record per shard; on the CPU the statistics are computed by its background threads)
taking ready-made synthetic shards (bf16 activations, 2 sources = base and chat at one layer,
d = 640 as Gemma 3 270M, the default ~128 MiB shard) as fast as it accepts them.
`sequential_write`: the serialized bytes of the same shards written one after the other with
`interp.fileio.atomic_write_bytes` (temp file, fsync, rename, fsync the folder), nothing else.
Rounds alternate which goes first, each run after `os.sync()`; `ratio` is the median over rounds
of sequential time / writer time (1.0: the writer costs nothing beyond the disk; the target is
>= 0.8), `ratio_of_fastest` the same for the fastest run of each (other I/O on a shared disk
only ever slows a run down). `--device cuda` hands
the writer shards whose activations are on the GPU, as the cache does there (statistics on the
device, one asynchronous copy into pinned memory per shard).

    python benchmarks/cache_overhead.py [--shards 6] [--rounds 3] [--dir FOLDER] [--device cpu]
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from interp.cache.config import default_shard_tokens
from interp.cache.manifest import FORMAT, empty_stats, write_manifest
from interp.cache.shard import serialize_shard, shard_name
from interp.cache.writer import ShardWriter, shard_metadata
from interp.fileio import atomic_write_bytes

N_MODELS, N_LAYERS = 2, 1


def synthetic_shard(n_tokens: int, d_model: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    acts = torch.randn(n_tokens, N_MODELS, N_LAYERS, d_model, generator=generator)
    return {
        "acts": acts.to(torch.bfloat16),
        "token_ids": torch.randint(0, 262_144, (n_tokens,), dtype=torch.int32),
        "seq_ids": torch.arange(n_tokens, dtype=torch.int64) // 128,
        "positions": torch.arange(n_tokens, dtype=torch.int32) % 128,
    }


def empty_cache_folder(folder: Path, n_shards: int, d_model: int) -> None:
    """The manifest `record_shard` adds to (what `build_cache` writes before the first shard)."""
    folder.mkdir(parents=True)
    manifest = {
        "format": FORMAT,
        "shards": [],
        "n_shards": n_shards,
        "stats": empty_stats(N_MODELS, N_LAYERS, d_model),
        "complete": False,
    }
    write_manifest(folder, manifest)


def time_writer(folder: Path, shards: list[dict], metadata: dict[str, str], d_model: int) -> float:
    empty_cache_folder(folder, len(shards), d_model)
    start = time.perf_counter()
    with ShardWriter(folder, metadata, "bfloat16") as writer:
        for index, tensors in enumerate(shards):
            writer.submit(index, tensors)
    return time.perf_counter() - start  # leaving the block waited for every shard on disk


def time_sequential(folder: Path, payloads: list[bytes]) -> float:
    folder.mkdir(parents=True)
    start = time.perf_counter()
    for index, data in enumerate(payloads):
        atomic_write_bytes(folder / shard_name(index), data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=640)
    parser.add_argument("--shard-tokens", type=int, default=None, help="default: ~128 MiB")
    parser.add_argument("--dir", default=None, help="folder on the disk to measure (default tmp)")
    parser.add_argument("--device", default="cpu", help="where the activations are: cpu, cuda")
    args = parser.parse_args()

    shard_tokens = args.shard_tokens or default_shard_tokens(
        N_MODELS, N_LAYERS, args.d_model, "bfloat16"
    )
    metadata = shard_metadata(["base", "chat"], [9], "bfloat16", "benchmark")
    # two distinct shards reused in turn: the "forward" hands over ready tensors, costing nothing
    distinct = [synthetic_shard(shard_tokens, args.d_model, seed) for seed in range(2)]
    shards = [distinct[index % 2] for index in range(args.shards)]
    payloads = [
        serialize_shard(tensors, {**metadata, "shard_index": str(index)})
        for index, tensors in enumerate(shards)
    ]
    on_device = [{**tensors, "acts": tensors["acts"].to(args.device)} for tensors in distinct]
    shards = [on_device[index % 2] for index in range(args.shards)]
    total_bytes = sum(map(len, payloads))
    writer_times, sequential_times = [], []
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for round_index in range(args.rounds + 1):  # round 0 warms up both paths
            order = ("writer", "sequential") if round_index % 2 else ("sequential", "writer")
            for which in order:
                os.sync()  # the disk starts idle: no write-back of the previous run lands here
                folder = Path(scratch) / which
                if which == "writer":
                    seconds = time_writer(folder, shards, metadata, args.d_model)
                else:
                    seconds = time_sequential(folder, payloads)
                shutil.rmtree(folder)
                if round_index:
                    (writer_times if which == "writer" else sequential_times).append(seconds)
    ratios = [seq / writer for seq, writer in zip(sequential_times, writer_times, strict=True)]
    mib = total_bytes / 2**20
    print(
        json.dumps(
            {
                "ratio": round(statistics.median(ratios), 3),
                "ratios": [round(r, 3) for r in ratios],
                # the least disturbed run of each (other I/O on the disk only ever slows one down)
                "ratio_of_fastest": round(min(sequential_times) / min(writer_times), 3),
                "writer_mib_per_s": round(mib / statistics.median(writer_times), 1),
                "sequential_write_mib_per_s": round(mib / statistics.median(sequential_times), 1),
                "writer_s": [round(t, 3) for t in writer_times],
                "sequential_write_s": [round(t, 3) for t in sequential_times],
                "shards": args.shards,
                "shard_tokens": shard_tokens,
                "shard_mib": round(mib / args.shards, 1),
                "d_model": args.d_model,
                "sources": N_MODELS * N_LAYERS,
                "dtype": "bfloat16",
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
