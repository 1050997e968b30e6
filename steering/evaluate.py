"""Evaluation of steering methods on a base/chat pair: concept rate (a judge on greedy responses
to held-out prompts) against wiki perplexity, for every method across strengths.

Tasks (`TASKS`) say which model is steered and which activations define source and target:
- `remove-refusal`: steer the chat model; source = its activations on harmful requests, target =
  its activations on benign requests. Concept rate = refusal rate on held-out harmful requests
  (expected to fall with the strength).
- `induce-refusal`: steer the base model; source = the base model's activations on harmful
  requests, target = the chat model's on other harmful requests (unpaired). The map moves the
  base model into the chat model's refusing regime (expected to raise the refusal rate).
Every map is fitted on `n` train-split texts per side; everything evaluated is held out.
TuCo alpha-scaling fits nothing: on `remove-refusal` it pulls the chat model's blocks towards
the base model's (alpha = 1 - lambda), on `induce-refusal` the base model's towards the chat
model's (alpha = lambda). Latent steering (`latents`, option `crosscoder`) uses the crosscoder's
source of the steered model, at that source's layer.

Run folder layout (`out`, e.g. runs/<name>/steering):
    config.json                      the EvalConfig, model specs
    results.parquet, results.json    one row per task x method x strength: concept_rate,
                                     perplexity, n_eval, fit_seconds
    results.md                       the same rows as a markdown table
    examples.json                    the first responses of every row
    training.json                    LinEAS loss curves (per task)
    plot.png                         concept rate vs wiki perplexity, one panel per task
    maps/<task>/<method>/            map.safetensors + map.json (steering_map.load_map)
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from interp.chat_template import render_chat
from interp.errors import InterpError
from interp.fileio import (
    atomic_output,
    atomic_save_png,
    atomic_write_json,
    atomic_write_text,
    guard_config,
)
from interp.generation import complete, decode_completions, encode_prompts
from interp.markdown import markdown_table
from interp.models import MODEL_DTYPE_RECORDED_BEFORE, LoadedModel, ModelPair, dtype_name
from interp.options import comma_separated
from steering.activations import encode_texts
from steering.methods import SteeringProblem, get_method
from steering.options import (
    LatentOptions,
    LineasOptions,
    SteerEvalOptions,
    parse_strengths,
)
from steering.sites import resolve_sites
from steering.steering_map import SteeringMap


@dataclass(frozen=True)
class SteeringTask:
    name: str
    steered: str  # "base" or "chat": the model the map edits (and whose source acts it moves)
    source: str  # dataset recipe of the source texts
    target: str  # dataset recipe of the target texts
    target_model: str  # "base" or "chat": the model that gives the target activations
    eval_recipe: str  # held-out prompts whose responses are judged
    goal: str  # "remove" or "induce": the concept rate should fall or rise


TASKS = {
    task.name: task
    for task in (
        SteeringTask(
            "remove-refusal", "chat", "harmful", "chat-benign", "chat", "harmful", "remove"
        ),
        SteeringTask("induce-refusal", "base", "harmful", "harmful", "chat", "harmful", "induce"),
    )
}


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    methods: list[str] = field(default_factory=lambda: ["lineas", "mean-diff", "linear-act"])
    n: int = 32  # unpaired train texts per side
    n_eval: int = 16  # held-out prompts judged per strength
    n_perplexity: int = 8  # held-out wiki texts for perplexity
    max_new_tokens: int = 24
    max_tokens: int = 64  # truncation of every input text
    strengths: dict[str, list[float]] = field(default_factory=dict)  # default: each method's
    lineas: dict[str, Any] = field(default_factory=dict)  # LinEASConfig options
    latents: dict[str, Any] = field(default_factory=dict)  # latent steering: crosscoder, mode, ...
    pooling: str = "mean"
    perplexity_recipe: str = "wiki"
    batch_size: int = 16

    def __post_init__(self) -> None:
        for name in self.tasks:
            if name not in TASKS:
                raise InterpError(f"unknown steering task {name!r}: expected one of {list(TASKS)}")
        for method in self.methods:
            get_method(method).check_options(self.options_of(method))
        if min(self.n, self.n_eval, self.n_perplexity, self.max_new_tokens) < 1:
            raise InterpError("n, n_eval, n_perplexity and max_new_tokens must all be >= 1")

    def strengths_of(self, method: str) -> list[float]:
        return list(self.strengths.get(method, get_method(method).strengths))

    def options_of(self, method: str) -> dict[str, Any]:
        """The fit options of `method` (the methods without a field here take none)."""
        return dict({"lineas": self.lineas, "latents": self.latents}.get(method, {}))


TextLoader = Callable[[str, str], list[str]]
Judge = Callable[[str], bool]


def chat_texts(tokenizer, prompts: Sequence[str]) -> list[str]:
    """Each prompt as one user turn ending with the generation prompt."""
    return [render_chat(tokenizer, prompt) for prompt in prompts]


@torch.no_grad()
def steered_responses(
    loaded: LoadedModel,
    prompts: Sequence[str],
    steering_map: SteeringMap | None,
    strength: float,
    max_new_tokens: int,
    batch_size: int = 16,
    inverse: bool = False,
) -> list[str]:
    """Greedy responses to chat-formatted prompts with the map applied at `strength`."""
    tokenizer = loaded.tokenizer
    responses: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = encode_prompts(tokenizer, prompts[start : start + batch_size])
        if steering_map is None:
            new_tokens = complete(loaded, **batch, max_new_tokens=max_new_tokens)
        else:
            with steering_map.apply(loaded.model, strength, inverse=inverse):
                new_tokens = complete(loaded, **batch, max_new_tokens=max_new_tokens)
        responses.extend(decode_completions(tokenizer, new_tokens))
    return responses


@torch.no_grad()
def perplexity(
    loaded: LoadedModel,
    texts: Sequence[str],
    steering_map: SteeringMap | None = None,
    strength: float = 1.0,
    max_tokens: int = 64,
    batch_size: int = 8,
) -> float:
    """exp(mean next-token NLL) over every real token of `texts` (BOS predicts nothing)."""
    batch = encode_texts(loaded.tokenizer, texts, max_tokens)
    total, count = 0.0, 0
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size].to(loaded.device)
        if steering_map is None:
            logits = loaded.model(
                input_ids=chunk.input_ids, attention_mask=chunk.attention_mask
            ).logits
        else:
            with steering_map.apply(loaded.model, strength):
                logits = loaded.model(
                    input_ids=chunk.input_ids, attention_mask=chunk.attention_mask
                ).logits
        nll = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), chunk.input_ids[:, 1:].flatten(), reduction="none"
        )
        mask = chunk.attention_mask[:, 1:].flatten().bool()
        total += float(nll[mask].sum())
        count += int(mask.sum())
    return math.exp(total / count)


def fit_task_map(
    pair: ModelPair,
    task: SteeringTask,
    method_name: str,
    config: EvalConfig,
    load_texts: TextLoader,
) -> tuple[SteeringMap, float, list[dict[str, float]] | None]:
    """Fit one method on the task's train texts; returns the map, its fit time and any log."""
    method = get_method(method_name)
    steered: LoadedModel = getattr(pair, task.steered)
    target_model: LoadedModel = getattr(pair, task.target_model)
    sites = resolve_sites(steered.model, method.site_kind, method.layers)
    source = encode_texts(
        pair.tokenizer,
        chat_texts(pair.tokenizer, load_texts(task.source, "train")[: config.n]),
        config.max_tokens,
    )
    target_texts = load_texts(task.target, "train")
    if task.target == task.source:  # unpaired: the target side takes the next n texts
        target_texts = target_texts[config.n :]
    target = encode_texts(
        pair.tokenizer, chat_texts(pair.tokenizer, target_texts[: config.n]), config.max_tokens
    )
    info = {
        "task": task.name,
        "steered_model": steered.spec,
        "target_model": target_model.spec,
        "source_recipe": task.source,
        "target_recipe": task.target,
        "n": config.n,
    }
    started = time.perf_counter()
    problem = SteeringProblem(
        steered.model,
        sites,
        source,
        target,
        target_model.model,
        config.pooling,
        info,
        model_spec=steered.spec,
        pair=pair,
        steered_role=task.steered,
    )
    steering_map, log = method.fit(problem, config.options_of(method_name))
    return steering_map, time.perf_counter() - started, (log.steps if log else None)


def run_evaluation(
    pair: ModelPair,
    config: EvalConfig,
    out: str | Path,
    load_texts: TextLoader,
    judge: Judge,
    progress: Callable[[str], None] = print,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Fit every method for every task, sweep strengths, write the run folder (module doc)."""
    out = Path(out)
    recorded = {
        "eval": asdict(config),
        "base": pair.base.spec,
        "chat": pair.chat.spec,
        "model_dtype": dtype_name(pair.base.dtype),
    }
    write_config(out, recorded, overwrite)
    wiki = load_texts(config.perplexity_recipe, "heldout")[: config.n_perplexity]
    rows: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    training: dict[str, Any] = {}
    unsteered: dict[str, tuple[list[str], float]] = {}
    for task_name in config.tasks:
        task = TASKS[task_name]
        steered: LoadedModel = getattr(pair, task.steered)
        prompts = load_texts(task.eval_recipe, "heldout")[: config.n_eval]
        for method_name in config.methods:
            steering_map, seconds, log = fit_task_map(pair, task, method_name, config, load_texts)
            steering_map.save(out / "maps" / task.name / method_name)
            progress(f"{task.name} {method_name}: fitted in {seconds:.1f} s")
            if log is not None:
                training[f"{task.name}/{method_name}"] = {"seconds": seconds, "steps": log}
            for strength in config.strengths_of(method_name):
                if strength == 0 and task.name in unsteered:
                    # lambda = 0 leaves every output bit-identical: one evaluation per task
                    responses, ppl = unsteered[task.name]
                else:
                    responses = steered_responses(
                        steered,
                        prompts,
                        steering_map,
                        strength,
                        config.max_new_tokens,
                        config.batch_size,
                    )
                    ppl = perplexity(steered, wiki, steering_map, strength, config.max_tokens)
                    if strength == 0:
                        unsteered[task.name] = responses, ppl
                rate = sum(judge(response) for response in responses) / len(responses)
                rows.append(
                    {
                        "task": task.name,
                        "goal": task.goal,
                        "method": method_name,
                        "strength": strength,
                        "concept_rate": rate,
                        "perplexity": ppl,
                        "n_eval": len(responses),
                        "fit_seconds": seconds,
                        "active_sites": len(steering_map.active_sites()),
                        "n_sites": len(steering_map.sites),
                    }
                )
                examples.append(
                    {
                        "task": task.name,
                        "method": method_name,
                        "strength": strength,
                        "examples": [
                            {"prompt": p, "response": r}
                            for p, r in zip(prompts[:3], responses[:3], strict=True)
                        ],
                    }
                )
                progress(f"  strength {strength:g}: concept rate {rate:.3f}, perplexity {ppl:.2f}")
    table = pd.DataFrame(rows)
    _write_table(table, out)
    atomic_write_json(out / "examples.json", examples)
    atomic_write_json(out / "training.json", training)
    plot_results(table, out / "plot.png")
    return table


def plot_results(table: pd.DataFrame, path: Path) -> None:
    """Concept rate against wiki perplexity, one panel per task, one line per method (markers
    labelled with the strength)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table["task"]))
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for method, rows in table[table["task"] == task].groupby("method", sort=False):
            axis.plot(rows["perplexity"], rows["concept_rate"], marker="o", label=method)
            for _, row in rows.iterrows():
                axis.annotate(
                    f"{row['strength']:g}", (row["perplexity"], row["concept_rate"]), fontsize=7
                )
        axis.set(title=task, xlabel="wiki perplexity (log)", ylabel="concept rate (refusal)")
        axis.set_xscale("log")  # a broken model reaches perplexities in the thousands
        axis.set_ylim(-0.05, 1.05)
        axis.legend()
    figure.tight_layout()
    atomic_save_png(figure, path, dpi=120)
    plt.close(figure)


def write_config(out: Path, payload: dict[str, Any], overwrite: bool = False) -> None:
    """Write `out/config.json`; an existing different config is an error unless `overwrite`
    (one written before `model_dtype` was recorded ran the models in fp32)."""
    path = out / "config.json"
    guard_config(path, payload, overwrite, "a run", recorded_before=MODEL_DTYPE_RECORDED_BEFORE)
    atomic_write_json(path, payload)


def _write_table(table: pd.DataFrame, out: Path) -> None:
    with atomic_output(out / "results.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    records = table.to_dict(orient="records")
    atomic_write_json(out / "results.json", records)
    markdown = markdown_table(records, list(table.columns)) + "\n"
    atomic_write_text(out / "results.md", markdown)


def evaluate_steering(
    options: SteerEvalOptions,
    lineas: LineasOptions,
    latent: LatentOptions,
    *,
    base: str,
    chat: str,
    out: Path,
    progress: Callable[[str], None] = print,
) -> pd.DataFrame:
    """What `interp steer eval` and a pipeline's [steer] step run: every method of `options` on
    the pair `base` / `chat`, into the run folder `out` (run_evaluation)."""
    from interp.datasets import load_texts
    from interp.judges import is_explicit_refusal
    from interp.models import load_pair_in

    config = EvalConfig(
        tasks=comma_separated(options.tasks),
        methods=comma_separated(options.methods),
        n=options.n,
        n_eval=options.n_eval,
        n_perplexity=options.n_perplexity,
        max_new_tokens=options.max_new_tokens,
        max_tokens=options.ctx,
        strengths=parse_strengths(options.strengths),
        lineas=lineas.method_options(),
        latents=latent.method_options() if latent.crosscoder else {},
        pooling=options.pooling,
    )
    pair = load_pair_in(base, chat, options.model_dtype, options.device)
    return run_evaluation(
        pair,
        config,
        out,
        load_texts,
        is_explicit_refusal,
        progress=progress,
        overwrite=options.overwrite,
    )
