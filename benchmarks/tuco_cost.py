"""Cost of TuCo against one fine-tuned forward pass on the same batch, in the same run.

Prints one JSON object: `tuco_s_per_prompt` (decomposition + scores, no OutputCo),
`forward_s_per_prompt` (the chat model's ordinary forward, logits included), `ratio` (target
<= 2.2), and for context `decoder_s_per_prompt` (the chat decoder without the unembedding) and
`ratio_vs_decoder`. The pair is the default one when the chat-tune adapter exists, else
`gemma-3-270m` against a second copy of itself (`pair` says which).

    python benchmarks/tuco_cost.py [--n-prompts 16] [--repeats 5] [--device cpu]
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from interp.builtin_models import BUILTINS, DEFAULT_PAIR
from interp.datasets import load_texts
from interp.models import load_pair
from interp.tuco import tokenize_prompts, tuning_contribution


def median_seconds(runs: dict[str, Callable[[], None]], repeats: int, device: str) -> dict:
    """Median wall time of each run after one warm-up call; the runs are interleaved so that a
    change in machine load hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    adapter = BUILTINS[DEFAULT_PAIR[1]].adapter_dir / "adapter_model.safetensors"
    specs = DEFAULT_PAIR if adapter.exists() else (DEFAULT_PAIR[0], DEFAULT_PAIR[0])
    pair = load_pair(*specs, device=args.device)
    prompts = load_texts("chat-benign", "heldout")[: args.n_prompts]
    batch = tokenize_prompts(pair, prompts)

    def forward() -> None:
        with torch.no_grad():
            pair.chat.model(**batch, use_cache=False)

    def decoder() -> None:
        with torch.no_grad():
            pair.chat.model.get_decoder()(**batch, use_cache=False)

    def tuco() -> None:
        tuning_contribution(pair, **batch)

    n = len(prompts)
    medians = median_seconds(
        {"forward": forward, "decoder": decoder, "tuco": tuco}, args.repeats, args.device
    )
    forward_s, decoder_s, tuco_s = (medians[k] / n for k in ("forward", "decoder", "tuco"))
    print(
        json.dumps(
            {
                "tuco_s_per_prompt": tuco_s,
                "forward_s_per_prompt": forward_s,
                "ratio": tuco_s / forward_s,
                "decoder_s_per_prompt": decoder_s,
                "ratio_vs_decoder": tuco_s / decoder_s,
                "pair": list(specs),
                "n_prompts": n,
                "tokens_per_prompt": batch["input_ids"].shape[1],
                "device": args.device,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
