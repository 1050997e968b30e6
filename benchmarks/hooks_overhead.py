"""Cost of reading the residual stream, relative to a plain HF forward pass.

Prints one JSON object: `hf_tokens_per_s` (plain forward of the built-in base on a batch of
8 x 128 tokens) and, for each hooked way of reading one middle layer, its tokens/s divided by
plain HF's: `nnsight_ratio` (an nnsight trace saving the layer), `tl_ratio` (TransformerLens
`run_with_cache` filtered to that hook) and `early_stop_ratio` (`interp.hooks.residual_stream`,
which stops after the layer). A ratio above 1 is faster than the plain pass.

All variants run in the same process on the same batch, interleaved round by round (so that a
change in machine load hits them alike), after one warm-up round; each reports the median of
`--repeats` rounds.

    python benchmarks/hooks_overhead.py [--model gemma-3-270m] [--repeats 5]
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from interp.hooks import (
    nnsight_forward,
    nnsight_model,
    residual_stream,
    transformer_lens_bridge,
    transformer_lens_hook_name,
)
from interp.layers import resolve_layer
from interp.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    loaded = load_model(args.model)
    layer = resolve_layer(0.5, loaded.n_layers)
    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(
        0, loaded.model.config.vocab_size, (args.batch, args.seq), generator=generator
    )
    lm = nnsight_model(loaded)
    bridge = transformer_lens_bridge(loaded)
    hook = transformer_lens_hook_name(layer)

    variants: dict[str, Callable[[], object]] = {
        "hf": lambda: loaded.model(input_ids=ids, use_cache=False),
        "nnsight": lambda: nnsight_forward(lm, ids, [layer]),
        "tl": lambda: bridge.run_with_cache(ids, names_filter=[hook]),
        "early_stop": lambda: residual_stream(loaded.model, ids, [layer]),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for round_index in range(args.repeats + 1):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                if round_index > 0:  # round 0 warms up
                    seconds[name].append(time.perf_counter() - start)

    tokens = args.batch * args.seq
    tokens_per_s = {name: tokens / statistics.median(times) for name, times in seconds.items()}
    result = {
        "hf_tokens_per_s": round(tokens_per_s["hf"], 1),
        "nnsight_ratio": round(tokens_per_s["nnsight"] / tokens_per_s["hf"], 3),
        "tl_ratio": round(tokens_per_s["tl"] / tokens_per_s["hf"], 3),
        "early_stop_ratio": round(tokens_per_s["early_stop"] / tokens_per_s["hf"], 3),
        "model": args.model,
        "layer": layer,
        "n_layers": loaded.n_layers,
        "batch": args.batch,
        "seq": args.seq,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
