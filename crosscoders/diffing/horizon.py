"""The generative horizon (`interp horizon`): how much chat-tuning narrows the next-token
distribution, and where. After Yang & Holtzman 2025, "How Alignment Shrinks the Generative
Horizon": the branching factor of a model along a generation is exp of its per-token entropy,

    H_t  = -sum_v p(v | x_<=t) log p(v | x_<=t)          (nats; torch.special.entr)
    BF_t = exp(H_t)                                        (the number of equally likely tokens
                                                            with the same entropy)
    BF   = exp(mean_t H_t)                                 (a generation or a position class)

Every prompt (chat-formatted, one user turn) is completed greedily (or sampled) by both models;
each of the two sequences (prompt + that model's response, up to its first stop token) is then
read by both models in one teacher-forced pass. So every position t has H_t of the model that
generated the sequence (`own`: along its own generation) and of the other model on the same
prefix (`shared`). Position t is classed by the token it predicts (interp's change-profile
classes, crosscoders.diffing.change_profile.token_classes): `template` (chat-template tokens:
turn markers, role names; the predicted `<end_of_turn>` included), `prompt` (the user's text),
`first_response` (the first `first_k` response tokens) and `later_response`.

Output folder: config.json, positions.parquet (one row per prompt x generator x model x
position: offset = index of the predicted token from the response start, negative in the
prompt; class, token, entropy, branching_factor), summary.json (per generator x model x class:
n, mean entropy, BF = exp(mean entropy); per response offset: mean entropy of each model along
each generator's responses), generations.json (the responses).
"""

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from crosscoders.diffing.change_profile import token_classes
from crosscoders.diffing.output_folder import claim_output_folder
from crosscoders.diffing.token_subsets import TemplateTokens
from interp.errors import InterpError
from interp.fileio import atomic_write_bytes, atomic_write_json
from interp.generation import complete, decode_completions, stop_token_ids
from interp.models import ModelPair
from interp.tuco import tokenize_prompts

ROLES = ("base", "chat")
POSITION_CLASSES = ("template", "prompt", "first_response", "later_response")


def entropy(logits: Float[Tensor, "*batch vocab"]) -> Float[Tensor, " *batch"]:
    """H = -sum_v p_v log p_v of softmax(logits), in nats (0 log 0 = 0), in float64."""
    return torch.special.entr(logits.double().softmax(-1)).sum(-1)


def branching_factor(entropies: Float[Tensor, "..."] | float) -> Float[Tensor, "..."] | float:
    """exp(H): a uniform distribution over n tokens has branching factor n."""
    if isinstance(entropies, Tensor):
        return entropies.exp()
    return float(np.exp(entropies))


def prediction_classes(
    token_ids: Sequence[int], prompt_length: int, template: TemplateTokens, first_k: int
) -> list[str | None]:
    """The class of each prediction t = 0 .. n-2 (of token t + 1) of one unpadded sequence
    (prompt + response); None where the predicted token has no class."""
    ids = np.asarray(token_ids, dtype=np.int64)
    masks = token_classes(ids, np.zeros(len(ids), dtype=np.int64), template)
    classes: list[str | None] = []
    for index in range(1, len(ids)):
        if masks["template"][index]:
            classes.append("template")
        elif masks["prompt"][index] and index < prompt_length:
            classes.append("prompt")
        elif index >= prompt_length:
            first = index - prompt_length < first_k
            classes.append("first_response" if first else "later_response")
        else:
            classes.append(None)
    return classes


@dataclass(frozen=True)
class HorizonConfig:
    max_new_tokens: int = 32
    first_k: int = 4  # response tokens counted as "first"
    sample: bool = False  # greedy by default; sampled at temperature 1 with `seed`
    seed: int = 0
    batch_size: int = 16

    def validate(self) -> None:
        if min(self.max_new_tokens, self.first_k, self.batch_size) < 1:
            raise InterpError(
                f"max_new_tokens {self.max_new_tokens}, first_k {self.first_k}, batch_size "
                f"{self.batch_size}: expected integers >= 1"
            )


def _response_length(row: list[int], stops: set[int]) -> int:
    """Tokens kept of a generated row: up to and including its first stop token."""
    for index, token in enumerate(row):
        if token in stops:
            return index + 1
    return len(row)


@torch.no_grad()
def horizon_rows(
    pair: ModelPair, prompts: Sequence[str], config: HorizonConfig
) -> tuple[list[dict], list[dict]]:
    """Per-position rows (module doc) and the generations, for one batch of prompts."""
    tokenizer = pair.tokenizer
    template = TemplateTokens.from_tokenizer(tokenizer)
    stops = set(stop_token_ids(tokenizer))
    batch = tokenize_prompts(pair, list(prompts), chat_template=True, padding_side="left")
    prompt_mask = batch["attention_mask"]
    rows: list[dict] = []
    generations: list[dict] = []
    for generator in ROLES:
        loaded = getattr(pair, generator)
        new = complete(
            loaded,
            batch["input_ids"],
            prompt_mask,
            config.max_new_tokens,
            do_sample=config.sample,
            seed=config.seed,
        ).cpu()
        texts = decode_completions(tokenizer, new)
        lengths = [_response_length(row, stops) for row in new.tolist()]
        keep = torch.zeros_like(new)
        for index, length in enumerate(lengths):
            keep[index, :length] = 1
        ids = torch.cat([batch["input_ids"].cpu(), new], dim=1)
        mask = torch.cat([prompt_mask.cpu(), keep], dim=1)
        entropies = {}
        for model_role in ROLES:
            reader = getattr(pair, model_role)
            logits = reader.model(
                input_ids=ids.to(reader.device),
                attention_mask=mask.to(reader.device),
                use_cache=False,
            ).logits
            # row by row: float64 softmax of [seq, 262k] logits for a whole batch is gigabytes
            entropies[model_role] = torch.stack([entropy(row) for row in logits]).cpu()
        for index, prompt in enumerate(prompts):
            real = mask[index].bool()
            sequence = ids[index][real].tolist()
            start = int((prompt_mask[index] == 0).sum())  # left padding of this row
            prompt_length = int(prompt_mask[index].sum())
            classes = prediction_classes(sequence, prompt_length, template, config.first_k)
            generations.append({"prompt": prompt, "generator": generator, "response": texts[index]})
            for t, position_class in enumerate(classes):
                if position_class is None:
                    continue
                predicted = sequence[t + 1]
                for model_role in ROLES:
                    value = float(entropies[model_role][index, start + t])
                    rows.append(
                        {
                            "prompt": index,
                            "prompt_text": prompt,
                            "generator": generator,
                            "model": model_role,
                            "own": generator == model_role,
                            "offset": t + 1 - prompt_length,
                            "class": position_class,
                            "token": tokenizer.decode([predicted]),
                            "entropy": value,
                            "branching_factor": float(np.exp(value)),
                        }
                    )
    return rows, generations


def summarize(table: pd.DataFrame) -> dict:
    """Per generator x model x class: n, mean entropy, BF = exp(mean entropy), mean BF_t; per
    response offset: mean entropy (own and shared readings)."""
    classes = []
    for (generator, model, position_class), group in table.groupby(
        ["generator", "model", "class"], sort=False
    ):
        mean_entropy = float(group["entropy"].mean())
        classes.append(
            {
                "generator": generator,
                "model": model,
                "own": generator == model,
                "class": position_class,
                "n": len(group),
                "mean_entropy": mean_entropy,
                "branching_factor": branching_factor(mean_entropy),
                "mean_position_branching_factor": float(group["branching_factor"].mean()),
            }
        )
    response = table[table["offset"] >= 0]
    curves = [
        {
            "generator": generator,
            "model": model,
            "offset": [int(o) for o in group.index],
            "mean_entropy": [float(v) for v in group.values],
        }
        for (generator, model), group in (
            response.groupby(["generator", "model", "offset"])["entropy"]
            .mean()
            .groupby(level=[0, 1])
        )
        for group in [group.droplevel([0, 1])]
    ]
    return {"classes": classes, "curves": curves}


def run_horizon(
    pair: ModelPair,
    prompts: Sequence[str],
    out,
    config: HorizonConfig = HorizonConfig(),
    identity: dict | None = None,
    force: bool = False,
) -> dict:
    """Entropy and branching factor of both models along both models' generations (module doc)
    into `out`; returns the summary."""
    from pathlib import Path

    config.validate()
    if not prompts:
        raise InterpError("no prompts given: expected at least one")
    out = Path(out)
    claim_output_folder(
        out, {**asdict(config), "n_prompts": len(prompts), **(identity or {})}, force
    )
    started = time.perf_counter()
    rows, generations = [], []
    for begin in range(0, len(prompts), config.batch_size):
        chunk = list(prompts[begin : begin + config.batch_size])
        chunk_rows, chunk_generations = horizon_rows(pair, chunk, config)
        for row in chunk_rows:
            row["prompt"] += begin
        rows += chunk_rows
        generations += chunk_generations
    table = pd.DataFrame(rows)
    atomic_write_bytes(out / "positions.parquet", table.to_parquet(index=False))
    atomic_write_json(out / "generations.json", generations)
    summary = summarize(table) | {
        "n_prompts": len(prompts),
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary)))
    return summary
