"""Greedy generation speed with a LinEAS map applied vs none, same prompts, same run.

Prints one JSON object: steered_tokens_per_s, plain_tokens_per_s, ratio (target >= 0.95), and
what was measured. The map is `--map DIR` (a trained map) or, by default, a dense LinEAS map at
every post-norm site of the model with small random (w - 1, b): the worst case, every site
hooked (a sparse trained map hooks fewer). Plain and steered runs alternate (which goes first
alternates too) so that load drift on a shared machine hits both alike; each side's speed is
its total new tokens over its total time. Every run generates exactly `--new-tokens` tokens.

    python benchmarks/steering_overhead.py [--model gemma-3-270m] [--repeats 6]
"""

import argparse
import json
import time

import torch

from interp.chat_template import render_chat
from interp.models import load_model
from steering.affine_map import AffineMap
from steering.sites import resolve_sites
from steering.steering_map import load_map

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "Give me three tips for learning to cook.",
]


def dense_random_map(model: torch.nn.Module, seed: int = 0) -> AffineMap:
    sites = resolve_sites(model, "post-norm")
    width = model.config.hidden_size
    generator = torch.Generator().manual_seed(seed)
    steering_map = AffineMap(sites, width, info={"method": "lineas", "note": "benchmark"})
    with torch.no_grad():
        steering_map.scale_offset.copy_(0.01 * torch.randn(len(sites), width, generator=generator))
        steering_map.bias.copy_(0.01 * torch.randn(len(sites), width, generator=generator))
    return steering_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--map", default=None, help="a trained map folder (default: dense random)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model)
    tokenizer = loaded.tokenizer
    steering_map = load_map(args.map) if args.map else dense_random_map(loaded.model)
    texts = [render_chat(tokenizer, prompt) for prompt in PROMPTS]
    batch = tokenizer(
        texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    )
    options = dict(
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )

    def run(steered: bool) -> tuple[int, float]:
        started = time.perf_counter()
        with torch.no_grad():
            if steered:
                with steering_map.apply(loaded.model, strength=1.0):
                    output = loaded.model.generate(**batch, **options)
            else:
                output = loaded.model.generate(**batch, **options)
        seconds = time.perf_counter() - started
        return (output.shape[1] - batch.input_ids.shape[1]) * output.shape[0], seconds

    run(False), run(True)  # warm-up
    totals = {False: [0, 0.0], True: [0, 0.0]}
    for repeat in range(args.repeats):
        for steered in (False, True) if repeat % 2 == 0 else (True, False):
            tokens, seconds = run(steered)
            totals[steered][0] += tokens
            totals[steered][1] += seconds
    plain = totals[False][0] / totals[False][1]
    steered = totals[True][0] / totals[True][1]
    print(
        json.dumps(
            {
                "steered_tokens_per_s": round(steered, 2),
                "plain_tokens_per_s": round(plain, 2),
                "ratio": round(steered / plain, 4),
                "model": args.model,
                "map": args.map or "dense random LinEAS map, every post-norm site",
                "hooked_sites": len(steering_map.active_sites()),
                "batch": len(PROMPTS),
                "new_tokens": args.new_tokens,
                "repeats": args.repeats,
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
