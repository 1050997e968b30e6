"""BatchTopK crosscoder training cost and quality at F = 16 d and 32 d after a fixed token budget.
Prints one JSON object: for each size, training throughput (tokens/s, training loop only), the
peak resident memory of the process during that training run, and held-out FVE per source with
the inference threshold (and its L0) and with the training rule (exactly k per token on average).

    python benchmarks/crosscoder_train.py [--cache PATH] [--tokens 102400] ...

`--sweep-dict-sizes 4096,8192,...` instead measures cost against F at fixed k, the dense formulas
against the sparse kernels of crosscoders/sparse_ops.py (`TrainingConfig.sparse_kernels`), on
synthetic planted activations (costs do not depend on the values): per F, training tokens/s of
each (trainer loop, `--sweep-steps` steps) with their ratio, and the decoder alone (forward and
backward of x^ = f W_dec for the same kept entries, median of `--sweep-repeats`) in ms per step,
which the sparse kernel keeps flat in F. One JSON object:

    python benchmarks/crosscoder_train.py --sweep-dict-sizes 4096,8192,16384,32768,65536

The default budget (200 steps of 512 tokens over ~26k distinct tokens, a few minutes per size on
one CPU thread) is where the FVE means something: at 32 steps it was still in the warm-up's
transient. Tokens of massive norm (> 5x the median, Gemma's rare outliers) are dropped from the
training and held-out data alike (`dropped_massive_tokens`; see dictionary_data.py).

Data: `--cache` (its two sources, e.g. base and chat at the middle layer) or, by default, the
default pair's middle layer computed here (gemma-3-270m and gemma-3-270m-chat on wiki texts; when
the chat model is not available, gemma-3-270m at the middle layer and the next one; the `data`
field says which).
"""

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from crosscoder_gpu import planted_activations
from dictionary_data import drop_massive_activations, from_cache, pair_middle_layer

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.evaluate import reconstruction_metrics
from crosscoders.losses import fraction_of_variance_explained
from crosscoders.sparse_ops import sparse_decode
from crosscoders.streams import tensor_stream
from crosscoders.trainer import Trainer


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def decoder_ms(dict_size: int, d: int, k: int, batch: int, repeats: int) -> dict[str, float]:
    """Forward + backward of the decoder alone (two sources) for k random kept latents per
    token: the dense product f W_dec against `sparse_decode`, median ms over `repeats`."""
    generator = torch.Generator().manual_seed(0)
    W_dec = torch.randn(dict_size, 2 * d, generator=generator, requires_grad=True)
    cols = torch.rand(batch, dict_size, generator=generator).topk(k, dim=-1).indices
    rows = torch.arange(batch)[:, None].expand(-1, k)
    rows, cols = rows.reshape(-1), cols.sort(dim=-1).values.reshape(-1)
    values = torch.rand(rows.numel(), generator=generator, requires_grad=True)

    def dense() -> torch.Tensor:
        code = torch.zeros(batch, dict_size).index_put((rows, cols), values)
        return code @ W_dec

    def sparse() -> torch.Tensor:
        return sparse_decode(rows, cols, values, W_dec, batch)

    times: dict[str, float] = {}
    for name, decode in (("dense", dense), ("sparse", sparse)):
        seconds = []
        for _ in range(repeats + 1):  # the first call warms up
            start = time.perf_counter()
            decode().square().sum().backward()
            seconds.append(time.perf_counter() - start)
            W_dec.grad = values.grad = None
        times[name] = round(1000 * statistics.median(seconds[1:]), 2)
    return times


def sweep(args: argparse.Namespace) -> None:
    sizes = [int(size) for size in args.sweep_dict_sizes.split(",")]
    d, batch = args.sweep_d, args.batch_size
    n_tokens = -(-batch * 8 // 4096) * 4096  # whole chunks of planted_activations
    acts = planted_activations(d, n_atoms=3 * d, n_tokens=n_tokens, seed=args.seed)
    runs = {}
    for dict_size in sizes:
        run: dict[str, float] = {}
        for kernels in ("dense", "sparse"):
            coder_config = CrossCoderConfig(
                n_sources=2, d_model=d, dict_size=dict_size, k=args.k, threshold_start_step=1
            )
            training = TrainingConfig(
                n_steps=args.sweep_steps, batch_size=batch, lr=args.lr, warmup_steps=1,
                log_every=args.sweep_steps, checkpoint_every=args.sweep_steps + 1,
                seed=args.seed, init_sample_tokens=batch, sparse_kernels=kernels == "sparse",
                threshold_calibration_batches=0,
            )  # fmt: skip
            with tempfile.TemporaryDirectory() as out:
                stream = tensor_stream(acts, batch, seed=args.seed)
                Trainer(coder_config, training, stream, Path(out), progress=False).train()
                log = json.loads((Path(out) / "log.jsonl").read_text().splitlines()[-1])
            run[f"{kernels}_tokens_per_s"] = round(log["tokens_per_s"], 1)
            gc.collect()
        run["sparse_over_dense"] = round(run["sparse_tokens_per_s"] / run["dense_tokens_per_s"], 2)
        decoder = decoder_ms(dict_size, d, args.k, batch, args.sweep_repeats)
        run["decoder_dense_ms"], run["decoder_sparse_ms"] = decoder["dense"], decoder["sparse"]
        runs[str(dict_size)] = run
    print(json.dumps({
        "runs": runs, "d_model": d, "n_sources": 2, "k": args.k, "batch_size": batch,
        "steps": args.sweep_steps, "decoder_repeats": args.sweep_repeats,
        "torch_threads": torch.get_num_threads(), "data": "synthetic planted atoms",
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="activation cache folder with two sources")
    parser.add_argument("--tokens", type=int, default=102_400, help="training token budget")
    parser.add_argument(
        "--train-tokens", type=int, default=26_000,
        help="distinct training tokens, reused in epochs up to the budget",
    )  # fmt: skip
    parser.add_argument("--heldout-tokens", type=int, default=2_048)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--expansions", default="16,32", help="F / d values")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep-dict-sizes", help="F values: measure cost against F instead")
    parser.add_argument("--sweep-d", type=int, default=256, help="sweep: d per source")
    parser.add_argument("--sweep-steps", type=int, default=5, help="sweep: training steps per run")
    parser.add_argument("--sweep-repeats", type=int, default=5, help="sweep: decoder timings")
    args = parser.parse_args()
    if args.sweep_dict_sizes:
        sweep(args)
        return

    n_tokens = min(args.train_tokens, args.tokens) + args.heldout_tokens
    acts, data = from_cache(args.cache, n_tokens) if args.cache else pair_middle_layer(n_tokens)
    acts, dropped = drop_massive_activations(acts)
    gc.collect()
    train, heldout = acts[: -args.heldout_tokens], acts[-args.heldout_tokens :]
    d, steps = acts.shape[-1], args.tokens // args.batch_size
    runs = {}
    for expansion in (int(e) for e in args.expansions.split(",")):
        coder_config = CrossCoderConfig(
            n_sources=acts.shape[1], d_model=d, dict_size=expansion * d, k=args.k,
            threshold_start_step=steps // 4,
        )  # fmt: skip
        training = TrainingConfig(
            n_steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=max(1, steps // 10),
            log_every=steps, checkpoint_every=steps + 1, seed=args.seed,
            init_sample_tokens=args.batch_size,
        )  # fmt: skip
        gc.collect()
        reset_peak_rss()
        with tempfile.TemporaryDirectory() as out:
            stream = tensor_stream(train, args.batch_size, seed=args.seed)
            coder = Trainer(coder_config, training, stream, Path(out), progress=False).train()
            log = json.loads((Path(out) / "log.jsonl").read_text().splitlines()[-1])
        peak = peak_rss_mb()
        metrics = reconstruction_metrics(coder, [heldout])  # inference rule: g > theta
        with torch.no_grad():  # the training rule: exactly k * B kept on the held-out batch
            batch_fve = fraction_of_variance_explained(heldout, coder.train()(heldout)).tolist()
        runs[f"{expansion}d"] = {
            "dict_size": expansion * d,
            "tokens_per_s": log["tokens_per_s"],
            "peak_rss_mb": peak,
            "fve_base": metrics["fve"]["0"],
            "fve_chat": metrics["fve"]["1"],
            "l0": metrics["l0"],
            "fve_base_batchtopk": batch_fve[0],
            "fve_chat_batchtopk": batch_fve[1],
        }
        del coder
    print(json.dumps({
        "runs": runs, "data": data, "d_model": d, "tokens": steps * args.batch_size,
        "distinct_tokens": train.shape[0], "dropped_massive_tokens": dropped, "steps": steps,
        "batch_size": args.batch_size, "k": args.k, "lr": args.lr,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
