"""What the cache's integrity checks cost on a finished cache (read only); prints one JSON object.

`open_s`: `ActivationCache(path)`, which checks every shard's presence, size, header, dtypes and
shapes. `checksum_s` / `checksum_gb_per_s`: `verify_checksums()` (every shard's sha256, what a
training run does once where it starts or resumes), with the page cache warm (one untimed pass
first). `verify_s`: `verify_cache` (sha256 + the finiteness scan of every activation).
`gather_ms` / `gather_unchecked_ms`: median over `--repeats` of one shuffled batch of
`--batch-size` tokens read through `gather` with and without the per-read finiteness check
(interleaved).

    python benchmarks/cache_integrity.py CACHE [--batch-size 512] [--repeats 50]
"""

import argparse
import json
import statistics
import time

import numpy as np

from interp.cache import ActivationCache, verify_cache
from interp.cache import reader as reader_module


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def gather_ms(cache: ActivationCache, batch_size: int, repeats: int) -> tuple[float, float]:
    """Median ms per batch with and without the finiteness check, interleaved round by round
    (alternating which goes first) so that load drifting on a shared machine hits both alike."""
    rng = np.random.default_rng(0)
    real_check = reader_module.ActivationCache._check_finite
    times: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(repeats):
        index = rng.integers(0, cache.n_tokens, batch_size)
        for checked in (round_ % 2 == 0, round_ % 2 == 1):
            if not checked:
                reader_module.ActivationCache._check_finite = lambda self, values, index: None
            try:
                start = time.perf_counter()
                cache.gather(index, normalize=True)
                times[checked].append(time.perf_counter() - start)
            finally:
                reader_module.ActivationCache._check_finite = real_check
    return 1000 * statistics.median(times[True]), 1000 * statistics.median(times[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cache")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    open_s = timed(lambda: ActivationCache(args.cache))
    cache = ActivationCache(args.cache)
    n_bytes = sum(shard["n_bytes"] for shard in cache.manifest["shards"] if "n_bytes" in shard)
    if not n_bytes:
        n_bytes = sum(
            (cache.path / shard["file"]).stat().st_size for shard in cache.manifest["shards"]
        )
    ActivationCache(args.cache).verify_checksums()  # warm the page cache
    checksum_s = timed(ActivationCache(args.cache).verify_checksums)
    verify_s = timed(lambda: verify_cache(args.cache))
    checked, unchecked = gather_ms(cache, args.batch_size, args.repeats)
    result = {
        "n_shards": len(cache.manifest["shards"]),
        "n_tokens": cache.n_tokens,
        "cache_mb": round(n_bytes / 1e6, 1),
        "open_s": round(open_s, 4),
        "checksum_s": round(checksum_s, 4),
        "checksum_gb_per_s": round(n_bytes / checksum_s / 1e9, 3),
        "verify_s": round(verify_s, 4),
        "gather_ms": round(checked, 3),
        "gather_unchecked_ms": round(unchecked, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
