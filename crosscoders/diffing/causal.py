"""Causal test of latent sets (Minder et al. 2025, sec. 4.3, Fig. 4), as the reference runs it
(science-of-finetuning/sparsity-artifacts-crosscoders: scripts/evaluate_interventions_effects.py,
tools/setup_to_eval.py `arxiv_paper_half_fns`, tools/halfway_interventions.py): does moving the
base residual along the latents' (chat - base) decoder difference make the chat model's later
layers behave like chat?

At the dictionary's layer l, for every token position,

    h_patched = h_base + sum_{j in S} f_j (d_j^chat - d_j^base)                         (eq. 6)

(f from encoding the pair's activations at that token, decoders in raw activation units; the
reference's CrossCoderSteeringLatent), then the CHAT model's blocks l+1.. run on h_patched.
Conditions (`causal_latent_sets`), the reference's names in brackets:
- none: h_base itself [vanilla_base2chat]: the KL every other condition is measured against;
- all: every latent = h_base + (x̂_chat - x̂_base) = chat's reconstruction plus base's error
  [patch_base-error_cchat; "All" in Fig. 4];
- chat_error: h_chat - sum_all f_j (d_j^chat - d_j^base) = base's reconstruction plus chat's
  error [patch_chat-error_cchat; "Chat Error"];
- the halves of the chat-only candidates (see `rank_candidates`): latent_scaling_best_half /
  _worst_half (rank sum of nu_r and nu_eps, low = best) and rel_norm_best_half / _worst_half
  (relative decoder norm Delta, high = best) [rank_sum- / dec_norm_diff-pareto / antipareto-50pct];
- random_candidates and random_latents: as many latents as a half, drawn at random from the
  candidates and from every live latent, each over N_RANDOM_SEEDS seeds and pooled (the
  reference's same-size random-chat{seed} / random{seed} baselines, create_acl_crosscoder_half_fns,
  pooled as scripts/utils/edit_eval_results.py add_random_means).

Measured: KL(P_chat || P_patched) (tools/compute_utils.py compute_kl: kl_div(patched, chat)) on
the positions that predict response tokens, split as the reference splits them
(`prediction_masks`): the first k = 10 predictions minus those made at a control token
(control_tokens.py), and the rest.

Positions the activation cache excludes (special tokens such as BOS, which the dictionary never
saw) are not edited: they keep the activation the condition starts from (the reference's
ignore_first_n_tokens keeps the unedited steered activations there).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from crosscoders.diffing.latent_scaling import CHAT_ONLY_DELTA
from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.responses import ChatResponse
from interp.divergence import kl_divergence
from interp.hooks import residual_edit, residual_stream

FIRST_K = 10  # the reference's --k-first
# Candidates keep -0.1 <= nu <= 2 for both ratios (setup_to_eval.py, arxiv_paper_half_fns).
NU_RANGE = (-0.1, 2.0)
N_RANDOM_SEEDS = 5  # the reference's --num-seeds
RANDOM_GROUPS = ("random_candidates", "random_latents")


def latent_patch(
    h: Float[Tensor, "pos d"],
    f: Float[Tensor, "pos F"],
    W_dec_raw: Float[Tensor, "2 F d"],
    latent_mask: Bool[Tensor, " F"],
    start: Literal["base", "chat"] = "base",
) -> Float[Tensor, "pos d"]:
    """eq. 6 from base: h_base + sum_{j in S} f_j (d_j^chat - d_j^base); from chat (the
    reference's chat-error condition): h_chat - sum_{j in S} f_j (d_j^chat - d_j^base)."""
    decoder_difference = W_dec_raw[1] - W_dec_raw[0]  # [F d]
    steering = (f * latent_mask) @ decoder_difference
    return h + steering if start == "base" else h - steering


@contextmanager
def replaced_block_output(model: nn.Module, layer: int, residual: Tensor) -> Iterator[None]:
    """While active, block `layer` of `model` outputs `residual` ([batch, seq, d]) instead of
    its own output; the blocks after it run on it unchanged."""

    def replace(hidden: Tensor) -> Tensor:
        assert hidden.shape == residual.shape, (hidden.shape, residual.shape)
        return residual.to(hidden.dtype)

    with residual_edit(model, layer, replace):
        yield


def prediction_masks(
    response_start: int, control: np.ndarray, first_k: int = FIRST_K
) -> tuple[np.ndarray, np.ndarray]:
    """Over the positions that predict the response tokens (position p predicts token p + 1, so
    p = response_start - 1 .. seq - 2; `control` is the [seq] control-token mask of the input):
    - first: the first `first_k` of them, minus those whose input token is a control token (the
      reference's k_first_pred_toks_mask = mask_k_first_ones_vec(assistant_pred_mask, k) &
      ~ctrl_mask; in a Gemma chat the first prediction is made at the newline of
      "<start_of_turn>model\\n", so the first k predictions keep k - 1 positions);
    - rest: every other predicting position (next_ass_toks_mask = assistant_pred_mask &
      ~k_first_pred_toks_mask: the predictions after the first k, and the control positions
      dropped from the first k).
    Both are boolean masks over the predicting positions ([seq - response_start])."""
    n_predicting = control.shape[0] - response_start
    positions = np.arange(response_start - 1, control.shape[0] - 1)
    first = (np.arange(n_predicting) < first_k) & ~control[positions]
    return first, ~first


@dataclass
class LatentSet:
    """One condition of the test: the latents S patched, and the model whose residual is edited."""

    mask: Bool[Tensor, " F"]
    start: Literal["base", "chat"] = "base"
    group: str | None = None  # random baselines: the pooled row the seed belongs to

    @property
    def n_latents(self) -> int:
        return int(self.mask.sum())


@torch.no_grad()
def causal_kl(
    base: nn.Module,
    chat: nn.Module,
    dictionary: PairDictionary,
    response: ChatResponse,
    latent_sets: dict[str, LatentSet],
    control: np.ndarray,
    excluded_positions: Bool[Tensor, " seq"],
    first_k: int = FIRST_K,
    sets_per_forward: int = 8,
) -> dict[str, dict[str, float]]:
    """For one prompt+response: per latent set, the summed KL(P_chat || P_patched) over the first-k
    and the rest positions (`prediction_masks`) and their token counts. The conditions run
    `sets_per_forward` at a time as one batch of identical sequences (no padding), and only the
    logits of the predicting positions are computed (`logits_to_keep`)."""
    ids = response.input_ids[None].to(next(chat.parameters()).device)
    layer = dictionary.layer
    streams = torch.cat([residual_stream(model, ids, [layer]) for model in (base, chat)], dim=2)[
        0
    ]  # [seq 2 d]: the pair at the dictionary's layer, sources [base, chat]
    starts = {"base": streams[:, 0], "chat": streams[:, 1]}
    f = dictionary.encode(streams)
    # positions response_start - 1 .. seq - 1 (the last one predicts past the response: dropped)
    n_kept = ids.shape[1] - response.response_start + 1
    chat_logits = chat(input_ids=ids, use_cache=False, logits_to_keep=n_kept).logits[0, :-1]
    first, rest = (
        torch.from_numpy(m).to(f.device)
        for m in prediction_masks(response.response_start, control, first_k)
    )
    keep = excluded_positions[:, None].to(f.device)

    def patched(latent_set: LatentSet) -> Float[Tensor, "seq d"]:
        h = starts[latent_set.start]
        edited = latent_patch(
            h, f, dictionary.W_dec_raw, latent_set.mask.to(f.device), latent_set.start
        )
        return torch.where(keep, h, edited)

    results = {}
    names = list(latent_sets)
    for begin in range(0, len(names), sets_per_forward):
        chunk = names[begin : begin + sets_per_forward]
        residual = torch.stack([patched(latent_sets[name]) for name in chunk])
        with replaced_block_output(chat, layer, residual):
            batch_ids = ids.expand(len(chunk), -1)
            logits = chat(input_ids=batch_ids, use_cache=False, logits_to_keep=n_kept).logits
        for name, patched_logits in zip(chunk, logits[:, :-1], strict=True):
            kl = kl_divergence(chat_logits, patched_logits).double()
            results[name] = {
                "kl_first_k_sum": float(kl[first].sum()),
                "n_first_k": int(first.sum()),
                "kl_rest_sum": float(kl[rest].sum()),
                "n_rest": int(rest.sum()),
            }
    return results


def latent_scaling_rank_sum(nu_r: np.ndarray, nu_eps: np.ndarray) -> np.ndarray:
    """rank(nu_r) + rank(nu_eps) over the given latents, ranks 1..n ascending with ties given
    their average rank (pandas' default, as the reference's df[...].rank())."""
    return pd.Series(nu_r).rank().to_numpy() + pd.Series(nu_eps).rank().to_numpy()


def in_nu_range(
    nu_r: np.ndarray, nu_eps: np.ndarray, nu_range: tuple[float, float] = NU_RANGE
) -> np.ndarray:
    """Both nu defined and inside `nu_range`, bounds included."""
    low, high = nu_range
    finite = np.isfinite(nu_r) & np.isfinite(nu_eps)
    return finite & (nu_r >= low) & (nu_r <= high) & (nu_eps >= low) & (nu_eps <= high)


def halves_of(
    candidates: np.ndarray, relative_norm: np.ndarray, nu_r: np.ndarray, nu_eps: np.ndarray
) -> dict[str, np.ndarray]:
    """The reference's halves of a candidate set (setup_to_eval.py, arxiv_paper_half_fns), each of
    n = len(candidates) // 2 latents:
    - rel_norm_best_half: the n of highest Delta (the reference sorts dec_norm_diff = 1 - Delta
      ascending), rel_norm_worst_half: the n of lowest;
    - latent_scaling_best_half: the n of lowest rank sum (`latent_scaling_rank_sum`: low nu_r and
      nu_eps = least present in base = most chat-specific), latent_scaling_worst_half: the n of
      highest.
    With an odd count the middle candidate is in neither half. Ties keep latent order (the
    reference's pandas sort leaves their order unspecified)."""
    n = candidates.size // 2
    by_norm = candidates[np.argsort(-relative_norm[candidates], kind="stable")]
    rank_sum = latent_scaling_rank_sum(nu_r[candidates], nu_eps[candidates])
    by_rank = candidates[np.argsort(rank_sum, kind="stable")]
    return {
        "latent_scaling_best_half": by_rank[:n],
        "latent_scaling_worst_half": by_rank[candidates.size - n :],
        "rel_norm_best_half": by_norm[:n],
        "rel_norm_worst_half": by_norm[candidates.size - n :],
    }


def rank_candidates(
    relative_norm: np.ndarray,
    nu_r: np.ndarray,
    nu_eps: np.ndarray,
    live: np.ndarray,
    chat_only: float = CHAT_ONLY_DELTA,
    nu_range: tuple[float, float] = NU_RANGE,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The paper's candidates: live chat-only latents (Delta >= `chat_only`) with both nu inside
    `nu_range` (the reference's .query("tag in ['Chat only', ...]").query("-0.1 <= beta_ratio_*
    <= 2")); returns their indices (ascending) and `halves_of` them."""
    keep = live & (relative_norm >= chat_only) & in_nu_range(nu_r, nu_eps, nu_range)
    candidates = np.flatnonzero(keep)
    return candidates, halves_of(candidates, relative_norm, nu_r, nu_eps)


def causal_latent_sets(
    relative_norm: np.ndarray,
    nu_r: np.ndarray,
    nu_eps: np.ndarray,
    live: np.ndarray,
    chat_only: float = CHAT_ONLY_DELTA,
    n_seeds: int = N_RANDOM_SEEDS,
) -> tuple[dict[str, LatentSet], dict[str, object]]:
    """Every condition of the module docstring, and a description of the candidate rule.

    When fewer than 2 latents pass the paper's rule (a small dictionary, or one with no chat-only
    latents, such as the quick demo's), the candidates are instead the top tenth (at least 2) by
    Delta of the live latents with both nu in range; `candidate_rule` says so and `paper_rule` is
    False. The halves and random baselines exist only with at least 2 candidates."""
    n_latents = relative_norm.shape[0]

    def mask(indices: np.ndarray) -> Tensor:
        out = torch.zeros(n_latents, dtype=torch.bool)
        out[torch.as_tensor(indices, dtype=torch.long)] = True
        return out

    every = mask(np.arange(n_latents))
    sets = {
        "none": LatentSet(mask(np.zeros(0, dtype=np.int64))),
        "all": LatentSet(every),
        "chat_error": LatentSet(every, start="chat"),
    }
    low, high = NU_RANGE
    in_range = f"{low} <= nu_r <= {high} and {low} <= nu_eps <= {high}"
    candidates, halves = rank_candidates(relative_norm, nu_r, nu_eps, live, chat_only)
    rule = f"live chat-only latents (rel_norm >= {chat_only}) with {in_range}"
    paper_rule = candidates.size >= 2
    if not paper_rule:
        pool = np.flatnonzero(live & in_nu_range(nu_r, nu_eps))
        n_top = max(2, pool.size // 10)
        candidates = np.sort(pool[np.argsort(-relative_norm[pool], kind="stable")[:n_top]])
        halves = halves_of(candidates, relative_norm, nu_r, nu_eps)
        rule = (
            f"fewer than 2 live chat-only latents with {in_range}: the top {candidates.size} by "
            f"rel_norm of the live latents with {in_range} (not the paper's rule)"
        )
    n_half = candidates.size // 2
    if n_half > 0:
        sets.update({name: LatentSet(mask(indices)) for name, indices in halves.items()})
        pools = {"random_candidates": candidates, "random_latents": np.flatnonzero(live)}
        for group, pool in pools.items():
            for seed in range(n_seeds):
                drawn = np.random.default_rng(seed).permutation(pool)[:n_half]
                sets[f"{group}_s{seed}"] = LatentSet(mask(drawn), group=group)
    description = {
        "candidate_rule": f"{rule}; halves of {n_half}",
        "paper_rule": bool(paper_rule),
        "n_candidates": int(candidates.size),
        "n_live": int(live.sum()),
    }
    return sets, description


def aggregate_causal(
    per_prompt: list[dict[str, dict[str, float]]], latent_sets: dict[str, LatentSet]
) -> list[dict[str, object]]:
    """One row per condition, token-weighted over prompts; the seeds of a random baseline pooled
    into one row (token-weighted over seeds, with each seed's value listed); the KL reduction
    relative to S = none."""

    def row(name: str, members: list[str]) -> dict[str, object]:
        sums = {
            key: sum(p[m][key] for p in per_prompt for m in members)
            for key in ("kl_first_k_sum", "n_first_k", "kl_rest_sum", "n_rest")
        }
        out: dict[str, object] = {
            "latent_set": name,
            "n_latents": latent_sets[members[0]].n_latents,
            "kl_first_k": sums["kl_first_k_sum"] / sums["n_first_k"] if sums["n_first_k"] else None,
            "kl_rest": sums["kl_rest_sum"] / sums["n_rest"] if sums["n_rest"] else None,
            "n_prompts": len(per_prompt),
            "n_tokens_first_k": sums["n_first_k"] // len(members),
            "n_tokens_rest": sums["n_rest"] // len(members),
        }
        if len(members) > 1:
            out["n_seeds"] = len(members)
            for key in ("kl_first_k", "kl_rest"):
                out[f"{key}_seeds"] = [row(m, [m])[key] for m in members]
        return out

    rows = [row(name, [name]) for name, s in latent_sets.items() if s.group is None]
    for group in RANDOM_GROUPS:
        members = [name for name, s in latent_sets.items() if s.group == group]
        if members:
            rows.append(row(group, members))
    none = next(r for r in rows if r["latent_set"] == "none")
    for r in rows:
        for key in ("kl_first_k", "kl_rest"):
            reference, value = none[key], r[key]
            usable = reference is not None and value is not None and reference > 0
            r[f"{key}_reduction"] = (reference - value) / reference if usable else None
    return rows
