"""Does TuCo rise on jailbreaks because of the jailbreak, or because of prompt length or template?

The paper (Nuti et al. 2025) finds that jailbreaks *lower* TuCo; `interp tuco experiments` on
the default pair found the opposite. This script separates the candidate causes with the same
held-out harmful requests in three forms, and benign requests in two:
- `harmful`: the request alone;
- `harmful+jailbreak`: the request inside a held-out jailbreak template (template i mod the
  number of templates whose wrapper has <= --max-wrapper-tokens (100) tokens);
- `harmful+filler`: the request after neutral held-out Wikipedia text with exactly as many
  tokens as that jailbreak's wrapper (same length, no jailbreak);
- `benign`, `benign+jailbreak`: benign requests alone and in the same templates.
TuCo at the last prompt token (chat template; interp.tuco.score_prompts, no OutputCo). Prints
one JSON line per set as it finishes (its TuCo and token counts), then one JSON object: per set
n, mean/median TuCo and mean prompt tokens; ROC-AUCs (positive class first: AUC > 0.5 means
the first set scores higher); per-request paired differences; Pearson r of TuCo with prompt
length within the sets of one request each.

    nice python benchmarks/tuco_length_template.py --n 64 --out /tmp/tuco_length.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from interp.datasets import SLOT, _source_texts, fill_template, load_texts, split_of
from interp.models import load_pair
from interp.tuco import roc_auc, score_prompts


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    vx = sum((a - mx) ** 2 for a in x)
    vy = sum((b - my) ** 2 for b in y)
    return cov / (vx * vy) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="requests per set")
    parser.add_argument("--max-wrapper-tokens", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    pair = load_pair()
    tokenizer = pair.tokenizer

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    templates = [
        t
        for _, t in _source_texts("jailbreak")
        if split_of(t) == "heldout" and n_tokens(t.replace(SLOT, "")) <= args.max_wrapper_tokens
    ]
    harmful = load_texts("harmful", "heldout")[: args.n]
    benign = load_texts("chat-benign", "heldout")[: args.n]
    wiki_tokens = tokenizer(
        "\n".join(load_texts("wiki", "heldout")), add_special_tokens=False
    ).input_ids
    wrapped = [fill_template(templates[i % len(templates)], r) for i, r in enumerate(harmful)]
    fillers, offset = [], 0
    for prompt, request in zip(wrapped, harmful, strict=True):
        wrapper = max(n_tokens(prompt) - n_tokens(request) - 1, 1)  # -1: the "\n\n" joint
        fillers.append(tokenizer.decode(wiki_tokens[offset : offset + wrapper]) + "\n\n" + request)
        offset += wrapper
    sets = {  # in order of importance: a run cut short still answers the main question
        "harmful": harmful,
        "harmful+jailbreak": wrapped,
        "harmful+filler": fillers,
        "benign": benign,
        "benign+jailbreak": [
            fill_template(templates[i % len(templates)], r) for i, r in enumerate(benign)
        ],
    }
    scores: dict[str, list[float]] = {}
    lengths: dict[str, list[int]] = {}
    for name, prompts in sets.items():
        rows = score_prompts(pair, prompts, args.batch_size, with_output_contribution=False)
        scores[name] = [row.tuco for row in rows]
        lengths[name] = [len(row.tokens) for row in rows]
        line = {"set": name, "tuco": scores[name], "tokens": lengths[name]}
        print(json.dumps(line), flush=True)  # partial results, one line per set

    def auc(positive: str, negative: str) -> float:
        values = scores[positive] + scores[negative]
        return roc_auc(values, [1] * len(scores[positive]) + [0] * len(scores[negative]))

    def paired(first: str, second: str) -> dict[str, float]:
        diffs = [a - b for a, b in zip(scores[first], scores[second], strict=True)]
        return {
            "mean": statistics.fmean(diffs),
            "share_positive": sum(d > 0 for d in diffs) / len(diffs),
        }

    result = {
        "n_templates": len(templates),
        "max_wrapper_tokens": args.max_wrapper_tokens,
        "sets": {
            name: {
                "n": len(values),
                "tuco_mean": statistics.fmean(values),
                "tuco_median": statistics.median(values),
                "tokens_mean": statistics.fmean(lengths[name]),
            }
            for name, values in scores.items()
        },
        "auc": {
            "harmful+jailbreak > harmful": auc("harmful+jailbreak", "harmful"),
            "harmful+filler > harmful": auc("harmful+filler", "harmful"),
            "harmful+jailbreak > harmful+filler": auc("harmful+jailbreak", "harmful+filler"),
            "benign+jailbreak > benign": auc("benign+jailbreak", "benign"),
            "harmful > benign": auc("harmful", "benign"),
        },
        "paired_difference": {
            "harmful+jailbreak - harmful": paired("harmful+jailbreak", "harmful"),
            "harmful+filler - harmful": paired("harmful+filler", "harmful"),
            "harmful+jailbreak - harmful+filler": paired("harmful+jailbreak", "harmful+filler"),
        },
        "pearson_tuco_tokens": {
            name: pearson(lengths[name], scores[name])
            for name in ("harmful+filler", "harmful+jailbreak", "harmful")
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
