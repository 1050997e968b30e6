"""BatchTopK SAE: this project's trainer vs dictionary_learning 0.1.0's `BatchTopKTrainer`, on the
same real activations, the same batches in the same order, same F, k, batch, steps, lr schedule
(linear warm-up, linear decay over the last 20%), threshold start and AuxK settings. Prints one
JSON object: throughput (tokens/s: ours from Trainer construction to the saved dictionary, i.e.
init, loop, theta calibration and checkpoint; theirs its update loop, b_dec init included) and
held-out FVE and L0 with each side's inference threshold (ours: theta calibrated on the final
weights; theirs: the EMA of the cutoff, which after 150 steps still holds its early values), plus
both FVEs under the training rule (exactly k * B kept on the held-out batch).

Both sides train the same SAE form: encoder centred on b_dec, unit-norm decoder whose gradient
along each row is removed (our defaults for n_sources = 1).

    python benchmarks/sae_vs_dictionary_learning.py [--cache PATH] [--steps 150] ...

Data: `--cache` (source 0 of an `interp cache` folder, e.g. the base model at the middle layer)
or, by default, gemma-3-270m's middle-layer residuals on wiki texts computed here. Both sides see
activations scaled to mean norm sqrt(d).
"""

import argparse
import json
import math
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from dictionary_data import base_middle_layer, from_cache
from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.evaluate import reconstruction_metrics
from crosscoders.losses import fraction_of_variance_explained
from crosscoders.streams import tensor_stream
from crosscoders.trainer import Trainer


def train_ours(args, stream, d: int) -> tuple[torch.nn.Module, float]:
    coder_config = CrossCoderConfig(
        n_sources=1, d_model=d, dict_size=args.dict_size, activation="batchtopk", k=args.k,
        threshold_start_step=args.steps // 2, auxk_alpha=1 / 32,
    )  # fmt: skip
    training = TrainingConfig(
        n_steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup,
        decay_start=0.8, init_sample_tokens=args.batch_size, log_every=args.steps,
        checkpoint_every=args.steps + 1, seed=args.seed,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        coder = Trainer(coder_config, training, stream, Path(out), progress=False).train()
        elapsed = time.perf_counter() - started
    return coder, args.steps * args.batch_size / elapsed


def train_theirs(args, stream, d: int) -> tuple[torch.nn.Module, float]:
    trainer = BatchTopKTrainer(
        steps=args.steps, activation_dim=d, dict_size=args.dict_size, k=args.k, layer=0,
        lm_name="benchmark", lr=args.lr, warmup_steps=args.warmup,
        decay_start=int(0.8 * args.steps), threshold_start_step=args.steps // 2,
        seed=args.seed, device="cpu",
    )  # fmt: skip
    started = time.perf_counter()
    for step, batch in enumerate(islice(stream(0), args.steps)):
        trainer.update(step, batch[:, 0])
    elapsed = time.perf_counter() - started
    return trainer.ae.eval(), args.steps * args.batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="activation cache folder (source 0 is used)")
    parser.add_argument("--train-tokens", type=int, default=12_288)
    parser.add_argument("--heldout-tokens", type=int, default=2_048)
    parser.add_argument("--dict-size", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    n_tokens = args.train_tokens + args.heldout_tokens
    acts, data = (
        from_cache(args.cache, n_tokens, [0]) if args.cache else base_middle_layer(n_tokens)
    )
    d = acts.shape[-1]
    acts = acts * (math.sqrt(d) / acts[: args.train_tokens].norm(dim=-1).mean())
    train, heldout = acts[: args.train_tokens], acts[args.train_tokens :]
    stream = tensor_stream(train, args.batch_size, seed=args.seed)

    ours, ours_speed = train_ours(args, stream, d)
    theirs, theirs_speed = train_theirs(args, stream, d)
    with torch.no_grad():
        ours_metrics = reconstruction_metrics(ours, [heldout])
        theirs_hat, theirs_f = theirs(heldout[:, 0], output_features=True)
        theirs_fve = fraction_of_variance_explained(heldout, theirs_hat[:, None])
        # the training rule (exactly k * B kept) on the held-out batch, for both
        ours_batch_fve = fraction_of_variance_explained(heldout, ours.train()(heldout))
        theirs_batch_f = theirs.encode(heldout[:, 0], use_threshold=False)
        theirs_batch_fve = fraction_of_variance_explained(
            heldout, theirs.decode(theirs_batch_f)[:, None]
        )
    result = {
        "ours_tokens_per_s": ours_speed,
        "theirs_tokens_per_s": theirs_speed,
        "throughput_ratio": ours_speed / theirs_speed,
        "ours_fve": next(iter(ours_metrics["fve"].values())),
        "theirs_fve": float(theirs_fve[0]),
        "ours_fve_batchtopk": float(ours_batch_fve[0]),
        "theirs_fve_batchtopk": float(theirs_batch_fve[0]),
        "ours_l0": ours_metrics["l0"],
        "theirs_l0": float((theirs_f > 0).sum(-1).float().mean()),
        "data": data,
        "d_model": d,
        "dict_size": args.dict_size,
        "k": args.k,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "lr": args.lr,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
