"""A score for every diffing method on every organism (`interp evaluate-diffing CONFIG`): which
methods recover the domain a fine-tune planted, scored by crosscoders.diffing.score from the
organism's planted vocabulary.

Per organism (a run folder `RUN/<organism>/`, filled by the pipeline steps of the config):

- crosscoder NAME (each `[train.NAME]`): the top-10 latents by chat-specificity (Latent
  Scaling's `chat_specific` flag first, then the relative decoder norm, 1 = chat-only; fired
  latents only), read through the chat decoder's logit lens (the fine-tuned model's final norm
  and unembedding) and the tokens of their top max-activating examples;
- difference SAE: the top-10 latents by mean activation over the cache, the same two readings;
- ADL logit lens: the top-20 tokens of logit lens(+delta_{l,j}) at the ADL layer, best of the k
  positions; ADL patchscope: its top-20 tokens, best position x scale;
- ADL steering (chat / base): the share of steered generations on neutral prompts that mention
  the domain, best position x strength among the coherent readings (mean NLL of the generations
  under the unsteered model <= `max_nll` and mean distinct-trigram ratio >= `min_distinct`:
  repetition has a low NLL, so the NLL alone passes "!!!!!!");
- TuCo amplification: the same share for the alpha-scaled fine-tuned model (largest coherent
  alpha).
- logit amplification (`interp amplify`, RUN/amplification): the same share for greedy
  generations from logits_base + alpha (logits_chat - logits_base), largest coherent alpha > 1,
  beside the unamplified chat model's (alpha = 1).

"Best of" a handful of fixed readings (positions, scales, strengths) is taken by code; every
reading's own number is in the JSON (`readings`).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crosscoders.diffing.adl import read_results
from crosscoders.diffing.decoder_views import direction_logits
from crosscoders.diffing.difference_sae import read_top_latents
from crosscoders.diffing.score import (
    TOP_LATENTS,
    TOP_TOKENS,
    MethodScore,
    distinct_trigram_ratio,
    latent_token_list,
    markdown_table,
    mention_share,
    planted_tokens,
    steering_score,
    token_score,
)
from interp.errors import InterpError
from interp.run_folder import RunFolder

DEFAULT_MAX_NLL = 5.0  # nats/token (perplexity ~150): above it a generation counts as incoherent
# mean distinct-character-trigram ratio below which generations count as degenerate repetition
DEFAULT_MIN_DISTINCT = 0.5


@dataclass
class Organism:
    name: str
    base: str
    chat: str
    vocabulary: list[str]
    description: str = ""
    dictionaries: list[str] = field(default_factory=list)


def crosscoder_latent_order(table: pd.DataFrame, n: int = TOP_LATENTS) -> list[int]:
    """Latents by chat-specificity: Latent Scaling's chat_specific flag, then relative decoder
    norm (descending), then frequency; latents that never fired are left out."""
    fired = table[table["freq"].fillna(0) > 0]
    flag = fired["chat_specific"].fillna(False).astype(bool)
    order = np.lexsort(
        (
            fired["latent"].to_numpy(),
            -fired["freq"].to_numpy(),
            -fired["rel_norm"].fillna(0).to_numpy(),
            ~flag.to_numpy(),
        )
    )
    return fired["latent"].to_numpy()[order][:n].tolist()


def example_tokens(examples: pd.DataFrame, tokenizer, latent: int) -> list[str]:
    """The token at each top max-activating example of `latent`, in rank order."""
    rows = examples[(examples["latent"] == latent) & (examples["kind"] == "top")].sort_values(
        "rank"
    )
    return [
        tokenizer.decode([int(ids[int(index)])])
        for ids, index in zip(rows["token_ids"], rows["max_index"], strict=True)
    ]


def crosscoder_tokens(
    analysis_dir: Path, dict_dir: Path, chat_model, tokenizer
) -> tuple[list[str], list[dict]]:
    """The crosscoder's top-20 token list and, per top latent, what it was built from."""
    from crosscoders.diffing.pair_dictionary import PairDictionary
    from crosscoders.io import load_crosscoder

    table = pd.read_parquet(analysis_dir / "latents.parquet")
    examples = pd.read_parquet(analysis_dir / "examples.parquet")
    latents = crosscoder_latent_order(table)
    dictionary = PairDictionary.from_coder(load_crosscoder(dict_dir))
    directions = dictionary.W_dec_raw[1, torch.tensor(latents, dtype=torch.long)]
    logits = direction_logits(chat_model, directions).cpu()
    top = logits.topk(TOP_TOKENS, dim=-1).indices
    logit_lists = [[tokenizer.decode([i]) for i in row.tolist()] for row in top]
    example_lists = [example_tokens(examples, tokenizer, latent) for latent in latents]
    by_latent = table.set_index("latent")
    readings = [
        {
            "latent": latent,
            "rel_norm": float(by_latent.loc[latent, "rel_norm"]),
            "latent_class": str(by_latent.loc[latent, "latent_class"]),
            "chat_specific": bool(by_latent.loc[latent, "chat_specific"]),
            "logit_tokens": logit_lists[i][:10],
            "example_tokens": example_lists[i][:10],
        }
        for i, latent in enumerate(latents)
    ]
    return latent_token_list(logit_lists, example_lists), readings


def difference_sae_tokens(folder: Path) -> tuple[list[str], list[dict]]:
    rows = read_top_latents(folder)[:TOP_LATENTS]
    tokens = latent_token_list(
        [r["logit_tokens"] for r in rows], [r["example_tokens"] for r in rows]
    )
    readings = [
        {
            "latent": r["latent"],
            "mean_act": r["mean_act"],
            "freq": r["freq"],
            "logit_tokens": r["logit_tokens"][:10],
            "example_tokens": r["example_tokens"][:10],
        }
        for r in rows
    ]
    return tokens, readings


def best_token_reading(
    organism: str, method: str, readings: Sequence[dict], vocabulary: Sequence[str], label
) -> tuple[MethodScore, list[dict]]:
    """Score each reading's token list; the cell is the best one (first on ties)."""
    scored = []
    for reading in readings:
        hits = planted_tokens(reading["tokens"], vocabulary)
        scored.append({"where": label(reading), "planted": len(hits), "hits": hits})
    best = max(range(len(readings)), key=lambda i: (scored[i]["planted"], -i))
    per = ", ".join(f"{s['where']}: {s['planted']}" for s in scored)
    score = token_score(
        organism, method, readings[best]["tokens"], vocabulary, detail=f"best of {per}"
    )
    return score, scored


def steering_cells(
    organism: str,
    steering: Sequence[dict],
    vocabulary: Sequence[str],
    max_nll: float,
    min_distinct: float = DEFAULT_MIN_DISTINCT,
) -> tuple[list[MethodScore], list[dict]]:
    """ADL steering of each steered model and TuCo amplification (see the module docstring)."""
    readings = []
    for row in steering:
        nll = [v for v in row["nll"] if v == v]
        distinct = float(np.mean([distinct_trigram_ratio(t) for t in row["completions"]]))
        readings.append(
            {
                "method": row["method"],
                "model": row["model"],
                "position": row.get("position"),
                "strength": row.get("strength"),
                "alpha": row.get("alpha"),
                "share": mention_share(row["completions"], vocabulary),
                "mean_nll": float(np.mean(nll)) if nll else float("nan"),
                "distinct": distinct,
                "coherent": bool(nll)
                and float(np.mean(nll)) <= max_nll
                and distinct >= min_distinct,
            }
        )
    cells = []
    unsteered = {
        row["model"]: row["completions"]
        for row in steering
        if row["method"] == "adl" and row.get("position") is None
    }
    for model in ("chat", "base"):
        candidates = [
            (i, r)
            for i, r in enumerate(readings)
            if r["method"] == "adl" and r["model"] == model and r["position"] is not None
        ]
        if not candidates:
            continue
        coherent = [(i, r) for i, r in candidates if r["coherent"]]
        if not coherent:
            cells.append(
                MethodScore(
                    organism,
                    f"ADL steering ({model})",
                    "steering",
                    share=0.0,
                    baseline_share=mention_share(unsteered.get(model, []), vocabulary),
                    detail=f"no coherent strength (mean NLL > {max_nll} or distinct < "
                    f"{min_distinct})",
                )
            )
            continue
        i, best = max(coherent, key=lambda item: (item[1]["share"], -item[0]))
        cells.append(
            steering_score(
                organism,
                f"ADL steering ({model})",
                steering[i]["completions"],
                unsteered.get(model, []),
                vocabulary,
                detail=f"position {best['position']}, strength {best['strength']}, mean NLL "
                f"{best['mean_nll']:.2f}, distinct {best['distinct']:.2f}; "
                f"{len(coherent)}/{len(candidates)} readings coherent",
            )
        )
    tuco = [(i, r) for i, r in enumerate(readings) if r["method"] == "tuco"]
    coherent = [(i, r) for i, r in tuco if r["coherent"]]
    if coherent:
        i, best = max(coherent, key=lambda item: (item[1]["alpha"], -item[0]))
        cells.append(
            steering_score(
                organism,
                "TuCo amplification",
                steering[i]["completions"],
                unsteered.get("chat", []),
                vocabulary,
                detail=f"alpha {best['alpha']}, mean NLL {best['mean_nll']:.2f}, distinct "
                f"{best['distinct']:.2f}",
            )
        )
    elif tuco:
        cells.append(
            MethodScore(
                organism,
                "TuCo amplification",
                "steering",
                share=0.0,
                baseline_share=mention_share(unsteered.get("chat", []), vocabulary),
                detail=f"no coherent alpha (mean NLL > {max_nll} or distinct < {min_distinct})",
            )
        )
    return cells, readings


def score_organism(
    organism: Organism,
    run_dir: Path,
    chat_model=None,
    tokenizer=None,
    max_nll: float = DEFAULT_MAX_NLL,
    min_distinct: float = DEFAULT_MIN_DISTINCT,
) -> tuple[list[MethodScore], dict]:
    """Every method's cell for one organism's run folder; methods whose results are missing get
    a `none` cell saying so."""
    run = RunFolder(run_dir)
    cells: list[MethodScore] = []
    readings: dict = {}
    vocabulary = organism.vocabulary
    for name in organism.dictionaries:
        method = f"crosscoder {name}"
        analysis, dict_dir = run.analysis(name), run.dictionary(name)
        if not (analysis / "latents.parquet").is_file() or chat_model is None:
            cells.append(MethodScore(organism.name, method, "none", detail="no analysis"))
            continue
        tokens, latent_readings = crosscoder_tokens(analysis, dict_dir, chat_model, tokenizer)
        classes = pd.read_parquet(analysis / "latents.parquet")["latent_class"].value_counts()
        cells.append(
            token_score(
                organism.name,
                method,
                tokens,
                vocabulary,
                detail="top-10 latents by chat-specificity; classes "
                + ", ".join(f"{k} {v}" for k, v in classes.items()),
            )
        )
        readings[method] = latent_readings
    sae_dir = run.diff_sae
    if (sae_dir / "top_latents.json").is_file():
        tokens, sae_readings = difference_sae_tokens(sae_dir)
        cells.append(
            token_score(
                organism.name,
                "difference SAE",
                tokens,
                vocabulary,
                detail="top-10 latents by mean activation",
            )
        )
        readings["difference SAE"] = sae_readings
    else:
        cells.append(MethodScore(organism.name, "difference SAE", "none", detail="not run"))
    try:
        adl = read_results(run.adl)
    except InterpError:
        adl = None
    if adl is None:
        for method in (
            "ADL logit lens",
            "ADL patchscope",
            "ADL steering (chat)",
            "TuCo amplification",
        ):
            cells.append(MethodScore(organism.name, method, "none", detail="not run"))
    else:
        layer = adl["summary"]["layer"]
        lens = [r for r in adl["logit_lens"] if r["layer"] == layer and r["sign"] == "+"]
        cell, scored = best_token_reading(
            organism.name, "ADL logit lens", lens, vocabulary, lambda r: f"pos {r['position']}"
        )
        cell.detail = f"layer {layer}, {cell.detail}"
        cells.append(cell)
        readings["ADL logit lens"] = scored
        scope = [r for r in adl["patchscope"] if r["tokens"]]
        if scope:
            cell, scored = best_token_reading(
                organism.name,
                "ADL patchscope",
                scope,
                vocabulary,
                lambda r: f"pos {r['position']} x{r['scale']}",
            )
            cells.append(cell)
            readings["ADL patchscope"] = scored
        steer_cells, steer_readings = steering_cells(
            organism.name, adl["steering"], vocabulary, max_nll, min_distinct
        )
        cells += steer_cells
        readings["steering"] = steer_readings
    amplification, amplification_readings = amplification_cells(
        organism.name, RunFolder(run_dir).amplification, vocabulary, max_nll, min_distinct
    )
    cells.append(amplification)
    if amplification_readings:
        readings["logit amplification"] = amplification_readings
    return cells, readings


def amplification_cells(
    organism: str,
    folder: Path,
    vocabulary: Sequence[str],
    max_nll: float,
    min_distinct: float = DEFAULT_MIN_DISTINCT,
) -> tuple[MethodScore, list[dict]]:
    """The logit amplification cell (module doc) from `interp amplify`'s generations."""
    method = "logit amplification"
    path = Path(folder) / "generations.json"
    if not path.is_file():
        return MethodScore(organism, method, "none", detail="not run (interp amplify)"), []
    rows = json.loads(path.read_text())
    _, readings = steering_cells(organism, rows, vocabulary, max_nll, min_distinct)
    unamplified = next((row["completions"] for row in rows if row["alpha"] == 1.0), [])
    amplified = [(i, r) for i, r in enumerate(readings) if r["alpha"] > 1.0]
    coherent = [(i, r) for i, r in amplified if r["coherent"]]
    if not coherent:
        return MethodScore(
            organism,
            method,
            "steering",
            share=0.0,
            baseline_share=mention_share(unamplified, vocabulary),
            detail=f"no coherent alpha > 1 (mean NLL > {max_nll} or distinct < {min_distinct})",
        ), readings
    i, best = max(coherent, key=lambda item: (item[1]["alpha"], -item[0]))
    score = steering_score(
        organism,
        method,
        rows[i]["completions"],
        unamplified,
        vocabulary,
        detail=f"alpha {best['alpha']}, mean NLL {best['mean_nll']:.2f}, distinct "
        f"{best['distinct']:.2f}; unamplified = chat (alpha 1)",
    )
    return score, readings


def write_table(
    out: Path,
    cells: Sequence[MethodScore],
    organisms: Sequence[Organism],
    readings: dict,
    profiles: dict,
) -> tuple[Path, Path]:
    """`diffing.json` (every cell, the readings behind it, the vocabularies) and `diffing.md`."""
    from interp.fileio import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "organisms": [
            {
                "name": o.name,
                "base": o.base,
                "chat": o.chat,
                "vocabulary": o.vocabulary,
                "description": o.description,
            }
            for o in organisms
        ],
        "cells": [cell.to_dict() for cell in cells],
        "readings": readings,
        "change_profile": profiles,
    }
    json_path, md_path = out / "diffing.json", out / "diffing.md"
    atomic_write_json(json_path, json.loads(json.dumps(payload, default=float)))
    lines = ["# Diffing methods on organisms with known answers", ""]
    for organism in organisms:
        lines += [
            f"- **{organism.name}**: `{organism.base}` -> `{organism.chat}`. "
            f"{organism.description} "
            f"Planted vocabulary ({len(organism.vocabulary)} words): "
            + ", ".join(organism.vocabulary),
        ]
    lines += [
        "",
        f"Score: distinct planted tokens among a method's top {TOP_TOKENS} tokens "
        "(recovered: >= 3), "
        "or the share of steered generations on neutral prompts that mention the domain "
        "(recovered: >= 0.5). Rules: crosscoders/diffing/score.py and evaluate_diffing.py.",
        "",
        markdown_table(cells),
    ]
    for name, profile in profiles.items():
        if profile.get("markdown"):
            lines += [
                f"## Change profile: {name}",
                "",
                profile.get("note", ""),
                "",
                profile["markdown"],
            ]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return json_path, md_path
