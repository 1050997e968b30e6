"""Causal test of latent sets (Minder et al. 2025, sec. 4.3): does moving the base residual along
the latents' (chat - base) decoder difference make the chat model's later layers behave like chat?

At the dictionary's layer l, for every token position,

    h_patched = h_base + sum_{j in S} f_j (d_j^chat - d_j^base)                         (eq. 6)

(f from encoding the pair's activations at that token, decoders in raw activation units), then
the CHAT model's blocks l+1.. run on h_patched. Reported: KL(P_chat || P_patched) averaged over the
first k response tokens and over all response tokens of held-out chat prompts. S = none (patch
= h_base) bounds the effect from above, S = all latents from below; the rest are halves of the
chat-only latents ranked by relative norm and by nu_eps.

Positions the activation cache excludes (special tokens such as BOS, which the dictionary never
saw) keep the chat model's own residual in every condition, so conditions differ only through
the latents.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.responses import ChatResponse
from interp.hooks import block_output, decoder_layers, residual_stream

FIRST_K = 10


def latent_patch(
    h_base: Float[Tensor, "pos d"],
    f: Float[Tensor, "pos F"],
    W_dec_raw: Float[Tensor, "2 F d"],
    latent_mask: Bool[Tensor, " F"],
) -> Float[Tensor, "pos d"]:
    """eq. 6: h_base + sum_{j in S} f_j (d_j^chat - d_j^base)."""
    decoder_difference = W_dec_raw[1] - W_dec_raw[0]  # [F d]
    return h_base + (f * latent_mask) @ decoder_difference


def kl_divergence(
    logits_p: Float[Tensor, "pos vocab"], logits_q: Float[Tensor, "pos vocab"]
) -> Float[Tensor, " pos"]:
    """KL(P || Q) per position, from logits."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@contextmanager
def replaced_block_output(model: nn.Module, layer: int, residual: Tensor) -> Iterator[None]:
    """While active, block `layer` of `model` outputs `residual` ([batch, seq, d]) instead of
    its own output; the blocks after it run on it unchanged."""

    def hook(_module: nn.Module, _args: tuple, output: Tensor | tuple):
        hidden = block_output(output)
        assert hidden.shape == residual.shape, (hidden.shape, residual.shape)
        replacement = residual.to(hidden.dtype)
        return (replacement, *output[1:]) if isinstance(output, tuple) else replacement

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def causal_kl(
    base: nn.Module,
    chat: nn.Module,
    dictionary: PairDictionary,
    response: ChatResponse,
    latent_sets: dict[str, Bool[Tensor, " F"]],
    excluded_positions: Bool[Tensor, " seq"],
    first_k: int = FIRST_K,
) -> dict[str, dict[str, float]]:
    """For one prompt+response: per latent set, the mean KL(P_chat || P_patched) over the first
    `first_k` response tokens and over all of them, plus the token counts."""
    ids = response.input_ids[None].to(next(chat.parameters()).device)
    layer = dictionary.layer
    streams = torch.cat([residual_stream(model, ids, [layer]) for model in (base, chat)], dim=2)[
        0
    ]  # [seq 2 d]: the pair at the dictionary's layer, sources [base, chat]
    h_base, h_chat = streams[:, 0], streams[:, 1]
    f = dictionary.encode(streams)
    chat_logits = chat(input_ids=ids, use_cache=False).logits[0]
    # logits at position t predict token t + 1: the response tokens are predicted from
    # response_start - 1 .. seq - 2
    predicting = slice(response.response_start - 1, ids.shape[1] - 1)
    n_first = min(first_k, response.n_response)
    results = {}
    for name, mask in latent_sets.items():
        patched = latent_patch(h_base, f, dictionary.W_dec_raw, mask.to(f.device))
        patched = torch.where(excluded_positions[:, None].to(patched.device), h_chat, patched)
        with replaced_block_output(chat, layer, patched[None]):
            patched_logits = chat(input_ids=ids, use_cache=False).logits[0]
        kl = kl_divergence(chat_logits[predicting], patched_logits[predicting])
        results[name] = {
            "kl_first_k": float(kl[:n_first].mean()),
            "kl_all": float(kl.mean()),
            "n_first_k": n_first,
            "n_all": int(kl.shape[0]),
        }
    return results


def latent_sets_for_causal_test(
    relative_norm: np.ndarray, nu_eps: np.ndarray, fired: np.ndarray, chat_only: float
) -> tuple[dict[str, Tensor], dict[str, object]]:
    """The sets S of the test. Candidates: latents that fired with Delta >= `chat_only`; when fewer
    than 2 exist (a tiny dictionary), the top tenth of firing latents by Delta instead. Halves by
    Delta (top = most chat-only) and by nu_eps (low = most chat-specific, among candidates where
    nu_eps is defined). Returns the masks and a description of the candidate rule."""
    n_latents = relative_norm.shape[0]
    firing = np.flatnonzero(fired)
    candidates = firing[relative_norm[firing] >= chat_only]
    rule = f"chat-only latents (rel_norm >= {chat_only})"
    if candidates.size < 2:
        n_top = max(2, firing.size // 10)
        candidates = firing[np.argsort(-relative_norm[firing], kind="stable")[:n_top]]
        rule = f"fewer than 2 chat-only latents: top {n_top} firing latents by rel_norm"

    def mask(indices: np.ndarray) -> Tensor:
        out = torch.zeros(n_latents, dtype=torch.bool)
        out[torch.as_tensor(indices, dtype=torch.long)] = True
        return out

    by_norm = candidates[np.argsort(-relative_norm[candidates], kind="stable")]
    half = by_norm.size // 2
    sets = {
        "none": mask(np.array([], dtype=np.int64)),
        "all": mask(np.arange(n_latents)),
        "candidates": mask(candidates),
        "rel_norm_top_half": mask(by_norm[:half]),
        "rel_norm_bottom_half": mask(by_norm[half:]),
    }
    with_nu = candidates[np.isfinite(nu_eps[candidates])]
    by_nu = with_nu[np.argsort(nu_eps[with_nu], kind="stable")]
    half_nu = by_nu.size // 2
    if half_nu > 0:
        sets["nu_eps_low_half"] = mask(by_nu[:half_nu])
        sets["nu_eps_high_half"] = mask(by_nu[half_nu:])
    description = {"candidate_rule": rule, "n_candidates": int(candidates.size)}
    description.update({f"size_{name}": int(m.sum()) for name, m in sets.items()})
    return sets, description


def aggregate_causal(per_prompt: list[dict[str, dict[str, float]]]) -> list[dict[str, object]]:
    """Token-weighted means over prompts, and the KL reduction relative to S = none."""
    names = list(per_prompt[0])
    rows = []
    for name in names:
        first = sum(p[name]["kl_first_k"] * p[name]["n_first_k"] for p in per_prompt)
        n_first = sum(p[name]["n_first_k"] for p in per_prompt)
        total = sum(p[name]["kl_all"] * p[name]["n_all"] for p in per_prompt)
        n_all = sum(p[name]["n_all"] for p in per_prompt)
        rows.append(
            {
                "latent_set": name,
                "kl_first_k": first / n_first,
                "kl_all": total / n_all,
                "n_prompts": len(per_prompt),
                "n_tokens_first_k": n_first,
                "n_tokens_all": n_all,
            }
        )
    none = next(row for row in rows if row["latent_set"] == "none")
    for row in rows:
        for key in ("kl_first_k", "kl_all"):
            reference = none[key]
            row[f"{key}_reduction"] = (reference - row[key]) / reference if reference > 0 else None
    return rows
