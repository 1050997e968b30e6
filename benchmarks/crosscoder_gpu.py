"""BatchTopK crosscoder training on an accelerator against the same training on the CPU, at the
shape of the paper's pair (Gemma 2 2B: d = 2304, two sources, F = 32 d, k = 100, batch 2048).
Prints one JSON object: tokens/s on each device (training loop only, from the trainer's log),
their ratio, the accelerator's peak memory, and held-out FVE / L0 after the accelerator run.

    python benchmarks/crosscoder_gpu.py [--device cuda] [--steps 300] [--cpu-steps 4] ...

`--variants float32-sparse,bf16-sparse,float32-dense` instead trains each variant (precision and
kernels: `TrainingConfig.precision`, `sparse_kernels`) on the device for the same steps on the
same data and prints one JSON object: per variant tokens/s, peak memory, held-out FVE and L0, and
against the first variant (the baseline) the speed ratio and the FVE difference.

The activations are synthetic (`crosscoders.synthetic.PlantedDictionary`: shared, base-only and
chat-only atoms), so the script needs no model and no cache; both runs see the same tensor.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.evaluate import reconstruction_metrics
from crosscoders.streams import tensor_stream
from crosscoders.synthetic import PlantedDictionary
from crosscoders.trainer import Trainer


def planted_activations(d: int, n_atoms: int, n_tokens: int, seed: int) -> torch.Tensor:
    """[n_tokens, 2, d] float32 from a planted dictionary (a third each shared, base- and
    chat-only), drawn in chunks to bound memory."""
    third = n_atoms // 3
    planted = PlantedDictionary.random(d, n_atoms - 2 * third, third, third, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    chunks = [planted.sample(4096, generator) for _ in range(n_tokens // 4096)]
    return torch.cat(chunks)


def train(acts, args, device: str, steps: int, precision: str = "auto", sparse: bool = True):
    d = acts.shape[-1]
    coder_config = CrossCoderConfig(
        n_sources=2, d_model=d, dict_size=args.expansion * d, k=args.k,
        threshold_start_step=max(1, steps // 4),
    )  # fmt: skip
    training = TrainingConfig(
        n_steps=steps, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=max(1, steps // 10), log_every=steps, checkpoint_every=steps + 1,
        seed=0, init_sample_tokens=args.batch_size, precision=precision, sparse_kernels=sparse,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        stream = tensor_stream(acts, args.batch_size, seed=0)
        trainer = Trainer(coder_config, training, stream, Path(out), device=device, progress=False)
        coder = trainer.train()
        log = json.loads((Path(out) / "log.jsonl").read_text().splitlines()[-1])
    return coder, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--d", type=int, default=2304)
    parser.add_argument("--expansion", type=int, default=32)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=300, help="accelerator steps")
    parser.add_argument("--cpu-steps", type=int, default=4, help="CPU baseline steps")
    parser.add_argument("--tokens", type=int, default=65_536, help="distinct training tokens")
    parser.add_argument("--atoms", type=int, default=12_288, help="planted atoms")
    parser.add_argument("--variants", help="PRECISION-KERNELS,...: compare training variants")
    args = parser.parse_args()

    start = time.perf_counter()
    acts = planted_activations(args.d, args.atoms, args.tokens + 4096, seed=0)
    train_acts, heldout = acts[:-4096], acts[-4096:]
    data_s = time.perf_counter() - start
    if args.variants:
        compare_variants(train_acts, heldout, args, data_s)
        return

    cpu_coder, cpu_log = train(train_acts, args, "cpu", args.cpu_steps)
    del cpu_coder
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    coder, log = train(train_acts, args, args.device, args.steps)
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
    metrics = reconstruction_metrics(coder, [heldout.to(args.device)], massive_ratio=0)
    print(json.dumps({
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "accelerator_tokens_per_s": log["tokens_per_s"],
        "cpu_tokens_per_s": cpu_log["tokens_per_s"],
        "ratio": round(log["tokens_per_s"] / cpu_log["tokens_per_s"], 2),
        "cpu_threads": torch.get_num_threads(),
        "peak_accelerator_mb": peak_mb,
        "fve_base": metrics["fve"]["0"], "fve_chat": metrics["fve"]["1"], "l0": metrics["l0"],
        "d_model": args.d, "dict_size": args.expansion * args.d, "k": args.k,
        "batch_size": args.batch_size, "steps": args.steps, "cpu_steps": args.cpu_steps,
        "data_seconds": round(data_s, 1),
    }))  # fmt: skip


def compare_variants(train_acts, heldout, args, data_seconds: float) -> None:
    cuda = args.device.startswith("cuda")
    runs: dict[str, dict] = {}
    for variant in args.variants.split(","):
        precision, _, kernels = variant.partition("-")
        if kernels not in ("dense", "sparse"):
            raise SystemExit(f"bad variant {variant!r}: expected PRECISION-dense|sparse")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        coder, log = train(
            train_acts, args, args.device, args.steps, precision, kernels == "sparse"
        )
        metrics = reconstruction_metrics(coder, [heldout.to(args.device)], massive_ratio=0)
        peak_mb = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
        runs[variant] = {
            "tokens_per_s": round(log["tokens_per_s"], 1), "peak_accelerator_mb": peak_mb,
            "fve_base": metrics["fve"]["0"], "fve_chat": metrics["fve"]["1"], "l0": metrics["l0"],
        }  # fmt: skip
        del coder
    baseline = next(iter(runs.values()))
    for run in runs.values():
        run["speed_over_baseline"] = round(run["tokens_per_s"] / baseline["tokens_per_s"], 2)
        run["fve_minus_baseline"] = round(
            min(run["fve_base"] - baseline["fve_base"], run["fve_chat"] - baseline["fve_chat"]), 4
        )
    print(json.dumps({
        "device": torch.cuda.get_device_name() if cuda else args.device,
        "baseline": next(iter(runs)), "runs": runs,
        "d_model": args.d, "dict_size": args.expansion * args.d, "k": args.k,
        "batch_size": args.batch_size, "steps": args.steps, "data_seconds": round(data_seconds, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
