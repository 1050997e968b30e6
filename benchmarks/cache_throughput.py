"""Activation-cache throughput against the bare forward pass it wraps; prints one JSON object.

`cache_tokens_per_s`: `build_cache` end to end (token plan, both forwards, gather, bf16 cast,
statistics, shard writes with sha256 and fsync, manifest updates) into a fresh folder.
`bare_forward_tokens_per_s`: the same batches (same token ids, batch size and context) through
both HF models with the decoder cut after the deepest cached block, no hooks, no copies, no disk.
Both count the same cached tokens. The CPU is shared, so after a warm-up of both paths the two
are interleaved round by round (alternating which goes first) and `ratio` is the median over
rounds of bare time / cache time (robust to load that drifts between rounds).
`reader_*_tokens_per_s`: `ActivationCache` over the cache just written (normalised float32
batches), shuffled and sequential, repeated until `--reader-seconds` have passed.

    python benchmarks/cache_throughput.py [--pair BASE CHAT] [--tokens 4096] [--rounds 3]
        [--device auto] [--model-dtype auto]

`--device` / `--model-dtype` as `interp cache`'s (auto: cuda if available; bf16 on CUDA, fp32 on
the CPU); on a GPU the bare forward gets its inputs on the device and both timings end with a
`torch.cuda.synchronize()`.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from interp.builtin_models import DEFAULT_PAIR
from interp.cache import ActivationCache, DatasetSource, build_cache, cache_config
from interp.cache.token_stream import TokenPlan, plan_token_stream
from interp.cache.writer import BatchRunner
from interp.hooks import decoder_layers
from interp.models import ModelPair, load_pair


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def bare_forward(
    pair: ModelPair, plan: TokenPlan, deepest: int, n_batches: int | None = None
) -> float:
    """Seconds to run the plan's batches through both decoders cut after block `deepest`."""
    device = pair.base.device
    pad = pair.tokenizer.pad_token_id or 0
    decoders = [loaded.model.get_decoder() for loaded in pair]
    full = [decoder_layers(loaded.model) for loaded in pair]
    for decoder, layers in zip(decoders, full, strict=True):
        decoder.layers = torch.nn.ModuleList(list(layers)[: deepest + 1])
    try:
        start = time.perf_counter()
        for batch in range(plan.n_batches if n_batches is None else n_batches):
            input_ids, attention, _ = plan.batch_tensors(batch, pad)
            input_ids, attention = input_ids.to(device), attention.to(device)
            for decoder in decoders:
                decoder(input_ids=input_ids, attention_mask=attention, use_cache=False)
        synchronize(device)
        return time.perf_counter() - start
    finally:
        for decoder, layers in zip(decoders, full, strict=True):
            decoder.layers = layers


def reader_rate(cache: ActivationCache, shuffled: bool, seconds: float, batch_size: int) -> float:
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if shuffled:
            batches = cache.iterate_batches(batch_size, split="all", seed=tokens, normalize=True)
        else:
            batches = (b.acts for b in cache.iterate_sequential(batch_size, normalize=True))
        for acts in batches:
            tokens += acts.shape[0]
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", nargs=2, default=list(DEFAULT_PAIR), metavar=("BASE", "CHAT"))
    parser.add_argument("--layers", default="0.5")
    parser.add_argument("--mix", default="wiki:0.5,chat:0.5")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--ctx", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reader-seconds", type=float, default=3.0)
    parser.add_argument("--reader-batch-size", type=int, default=1024)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--model-dtype", default="auto", help="auto (bf16 on CUDA), bf16, fp32")
    args = parser.parse_args()

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    pair = load_pair(*args.pair, dtype=args.model_dtype, device=device)
    config = cache_config(
        pair, args.layers.split(","), args.mix, args.tokens, args.ctx, args.batch_size
    )
    source = DatasetSource(config.split)
    plan = plan_token_stream(
        source, pair.tokenizer, config.mix, config.n_tokens, config.ctx, config.batch_size,
        config.shard_tokens, config.seed, config.keep_special,
    )  # fmt: skip
    bare_forward(pair, plan, max(config.layers), n_batches=1)  # warm-up: first calls are slow
    BatchRunner(pair, plan, config.layers, config.storage_dtype).rows(0)
    bare_seconds, cache_seconds = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            out = Path(scratch) / f"cache-{round_index}"
            # alternate which goes first so that drifting load hurts neither side
            for step in ("bare", "cache") if round_index % 2 == 0 else ("cache", "bare"):
                if step == "bare":
                    bare_seconds.append(bare_forward(pair, plan, max(config.layers)))
                else:
                    start = time.perf_counter()
                    build_cache(pair, config, out, source, progress=False)
                    synchronize(pair.base.device)
                    cache_seconds.append(time.perf_counter() - start)
        cache = ActivationCache(out, validation_fraction=0.0)
        shuffled = reader_rate(cache, True, args.reader_seconds, args.reader_batch_size)
        sequential = reader_rate(cache, False, args.reader_seconds, args.reader_batch_size)
    tokens = config.n_tokens
    per_round = [b / c for b, c in zip(bare_seconds, cache_seconds, strict=True)]
    result = {
        "cache_tokens_per_s": tokens * args.rounds / sum(cache_seconds),
        "bare_forward_tokens_per_s": tokens * args.rounds / sum(bare_seconds),
        "ratio": statistics.median(per_round),
        "reader_shuffled_tokens_per_s": shuffled,
        "reader_sequential_tokens_per_s": sequential,
        "per_round_ratio": per_round,
        "ratio_of_totals": sum(bare_seconds) / sum(cache_seconds),
        "pair": list(args.pair),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
        "model_dtype": str(pair.base.model.dtype).removeprefix("torch."),
        "layers": list(config.layers),
        "tokens": tokens,
        "ctx": config.ctx,
        "batch_size": config.batch_size,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
