"""Why LinEAS does less than its baselines on the default pair: does the map reach its own
objective on held-out activations, and which departure from the paper's protocol matters?

For one steering task of `steering.evaluate.TASKS` (default `induce-refusal`: move the base
model's activations on harmful requests onto the chat model's), every row fits one map on
`--n` train texts a side and reports:
- `sw_before` / `sw_after` per site and in total: the LinEAS objective, sum over neurons of the
  1-D W2^2 between the steered model's samples on held-out source texts and the target model's
  samples on other held-out target texts (W2 along each neuron axis, i.e. the sliced W2 with the
  neuron axes as slices; steering/wasserstein.py), unsteered (strength 0) and at strength 1.
  Measured with mean pooling (one sample per text, the paper's) and with token samples, whatever
  the row was trained on; `sw_ratio` = after / before.
- `train_loss_first` / `train_loss_last` (LinEAS rows): the training objective on the train texts.
- per strength: the concept (refusal) rate of greedy responses to `--n-eval` held-out prompts and
  the wiki perplexity of `--n-perplexity` held-out texts, with the map applied.

Rows (`--rows`, comma-separated names of ROWS): the baselines (mean-difference at its site and
multipliers, Linear-AcT), a LinEAS reference configuration, and LinEAS with one setting changed
each (pooling, steps, learning rate, sites, sparsity gamma; lambda is the strength sweep of the
reference row). Each row's JSON is printed as one line when it finishes (and appended to
`--out` if given), then one JSON object with every row.

    nice python benchmarks/lineas_ablation.py --out /tmp/h6/ablation.jsonl
"""

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.datasets import load_texts
from interp.judges import is_explicit_refusal
from interp.models import load_pair
from steering.activations import encode_texts, site_activations
from steering.evaluate import TASKS, chat_texts, perplexity, steered_responses
from steering.methods import SteeringProblem, get_method
from steering.sites import resolve_sites
from steering.steering_map import SteeringMap
from steering.wasserstein import per_neuron_w2


@dataclass(frozen=True)
class Row:
    method: str
    strengths: tuple[float, ...] = (1.0,)
    pooling: str = "mean"
    site_kind: str | None = None  # None: the method's
    layers: tuple[Any, ...] | None = None  # None: the method's
    lineas: dict[str, Any] = field(default_factory=dict)  # overrides of LINEAS


LINEAS = {"steps": 100, "lr": 0.01, "batch_size": 16, "sparsity": 0.0, "seed": 0}
ROWS = {
    "mean-diff": Row("mean-diff", strengths=(1.0, 2.0, 4.0)),
    "linear-act": Row("linear-act"),
    "lineas": Row("lineas", strengths=(0.5, 1.0, 2.0)),  # lambda beyond 1 extrapolates
    "lineas-tokens": Row("lineas", pooling="tokens"),
    "lineas-last": Row("lineas", pooling="last"),
    "lineas-3x-steps": Row("lineas", lineas={"steps": 3}),  # 3 x the reference's steps
    "lineas-lr-1e-3": Row("lineas", lineas={"lr": 1e-3}),  # the reference's Adam lr
    "lineas-block-mid": Row("lineas", site_kind="block", layers=(0.5,)),  # CAA's single site
    "lineas-block-all": Row("lineas", site_kind="block"),
    "lineas-gamma-0.1": Row("lineas", lineas={"sparsity": 0.1}),
    "lineas-gamma-0.5": Row("lineas", lineas={"sparsity": 0.5}),
}
DEFAULT_ROWS = (
    "mean-diff,linear-act,lineas,lineas-tokens,lineas-last,lineas-lr-1e-3,lineas-block-mid,"
    "lineas-gamma-0.1,lineas-3x-steps"
)


def per_site_sw(
    model, sites, steering_map: SteeringMap | None, batch, target_samples, pooling: str
) -> list[float]:
    """Sum over neurons of W2^2(source samples steered at strength 1, target samples), one
    value per site (no map: the unsteered model)."""
    with torch.no_grad():
        if steering_map is None:
            source = site_activations(model, sites, batch, pooling)
        else:
            with steering_map.apply(model, 1.0):
                source = site_activations(model, sites, batch, pooling)
    return per_neuron_w2(source, target_samples).sum(dim=-1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="induce-refusal", choices=sorted(TASKS))
    parser.add_argument("--rows", default=DEFAULT_ROWS)
    parser.add_argument("--n", type=int, default=32, help="train texts a side")
    parser.add_argument("--n-heldout", type=int, default=32, help="held-out texts a side (SW)")
    parser.add_argument("--n-eval", type=int, default=16)
    parser.add_argument("--n-perplexity", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=LINEAS["steps"], help="LinEAS reference")
    parser.add_argument("--lr", type=float, default=LINEAS["lr"], help="LinEAS reference")
    parser.add_argument("--batch-size", type=int, default=LINEAS["batch_size"])
    parser.add_argument("--out", type=Path, default=None, help="append each row's JSON line here")
    args = parser.parse_args()
    torch.manual_seed(0)
    unknown = [name for name in args.rows.split(",") if name not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}: expected some of {sorted(ROWS)}")

    reference = {**LINEAS, "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size}
    started = time.perf_counter()
    pair = load_pair()
    task = TASKS[args.task]
    steered, target_model = getattr(pair, task.steered), getattr(pair, task.target_model)
    tokenizer = pair.tokenizer

    def encode(texts: list[str]):
        return encode_texts(tokenizer, chat_texts(tokenizer, texts), args.max_tokens)

    train_source = load_texts(task.source, "train")
    train_target = load_texts(task.target, "train")
    if task.target == task.source:  # unpaired, as steering.evaluate.fit_task_map
        train_target = train_target[args.n :]
    source, target = encode(train_source[: args.n]), encode(train_target[: args.n])
    held_source = load_texts(task.source, "heldout")
    held_target = load_texts(task.target, "heldout")
    if task.target == task.source:
        held_target = held_target[args.n_heldout :]
    held_source_batch = encode(held_source[: args.n_heldout])
    held_target_batch = encode(held_target[: args.n_heldout])
    prompts = load_texts(task.eval_recipe, "heldout")[: args.n_eval]
    wiki = load_texts("wiki", "heldout")[: args.n_perplexity]

    def evaluate(steering_map: SteeringMap | None, strength: float) -> dict[str, float]:
        responses = steered_responses(steered, prompts, steering_map, strength, args.max_new_tokens)
        rate = sum(map(is_explicit_refusal, responses)) / len(responses)
        ppl = perplexity(steered, wiki, steering_map, strength, args.max_tokens)
        return {"strength": strength, "concept_rate": rate, "perplexity": ppl}

    unsteered = evaluate(None, 0.0)
    print(json.dumps({"row": "unsteered", **unsteered}), flush=True)
    target_cache: dict[tuple[tuple[str, ...], str], torch.Tensor] = {}
    rows = []
    for name in args.rows.split(","):
        row = ROWS[name]
        method = get_method(row.method)
        sites = resolve_sites(
            steered.model, row.site_kind or method.site_kind, row.layers or method.layers
        )
        options = {**reference, **row.lineas} if row.method == "lineas" else {}
        if "steps" in row.lineas:  # a multiple of the reference's steps
            options["steps"] = row.lineas["steps"] * reference["steps"]
        problem = SteeringProblem(
            steered.model, sites, source, target, target_model.model, row.pooling, {"row": name}
        )
        fit_started = time.perf_counter()
        torch.manual_seed(0)
        steering_map, log = method.fit(problem, options)
        fit_seconds = time.perf_counter() - fit_started
        result: dict[str, Any] = {
            "row": name,
            "method": row.method,
            "pooling": row.pooling,
            "n_sites": len(sites),
            "site_kind": row.site_kind or method.site_kind,
            "options": options,
            "fit_seconds": round(fit_seconds, 1),
            "active_sites": len(steering_map.active_sites()),
        }
        if log is not None:
            result["train_loss_first"] = log.steps[0]["loss"]
            result["train_loss_last"] = log.steps[-1]["loss"]
            result["active_neurons"] = log.steps[-1]["active_neurons"]
        for pooling in ("mean", "tokens"):
            key = (tuple(sites), pooling)
            if key not in target_cache:
                with torch.no_grad():
                    target_cache[key] = site_activations(
                        target_model.model, sites, held_target_batch, pooling
                    )
            before = per_site_sw(
                steered.model, sites, None, held_source_batch, target_cache[key], pooling
            )
            after = per_site_sw(
                steered.model, sites, steering_map, held_source_batch, target_cache[key], pooling
            )
            result[f"sw_{pooling}"] = {
                "before": sum(before),
                "after": sum(after),
                "ratio": sum(after) / sum(before),
                "sites_improved": sum(a < b for a, b in zip(after, before, strict=True)),
                "per_site_before": [round(v, 3) for v in before],
                "per_site_after": [round(v, 3) for v in after],
            }
        result["eval"] = [evaluate(steering_map, strength) for strength in row.strengths]
        rows.append(result)
        line = json.dumps(result)
        print(line, flush=True)
        if args.out is not None:
            with args.out.open("a") as handle:
                handle.write(line + "\n")
    summary = {
        "task": args.task,
        "n": args.n,
        "n_heldout": args.n_heldout,
        "n_eval": args.n_eval,
        "n_perplexity": args.n_perplexity,
        "max_new_tokens": args.max_new_tokens,
        "lineas_reference": reference,
        "unsteered": unsteered,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
