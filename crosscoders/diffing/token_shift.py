"""Token distribution shift (Lin et al. 2023, URIAL): where does the chat model's greedy response
leave the base model's distribution?

At each response position t the chat model chose its top token c_t; given the same prefix the base
model ranks it r_t (1 = also base's top token). Classes: unshifted (r = 1), marginal (r in 2..3),
shifted (r > 3). Also stored: KL(P_chat || P_base) at that position.
"""

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from crosscoders.diffing.responses import ChatResponse
from interp.divergence import kl_divergence

MARGINAL_MAX_RANK = 3


def rank_of(
    logits: Float[Tensor, "pos vocab"], token_ids: Int[Tensor, " pos"]
) -> Int[Tensor, " pos"]:
    """1-based rank of each token under the logits (1 + how many tokens score strictly higher)."""
    chosen = logits.gather(-1, token_ids[:, None])
    return 1 + (logits > chosen).sum(-1)


def shift_class(rank: int) -> str:
    if rank == 1:
        return "unshifted"
    return "marginal" if rank <= MARGINAL_MAX_RANK else "shifted"


@torch.no_grad()
def token_shift_rows(
    base: nn.Module, chat: nn.Module, response: ChatResponse, prompt_id: int, tokenizer
) -> list[dict[str, object]]:
    """One row per response token: the chat top token, its rank under base, and the KL."""
    ids = response.input_ids[None].to(next(chat.parameters()).device)
    predicting = slice(response.response_start - 1, ids.shape[1] - 1)
    chat_logits = chat(input_ids=ids, use_cache=False).logits[0, predicting].float()
    base_logits = base(input_ids=ids, use_cache=False).logits[0, predicting].float()
    chat_top = chat_logits.argmax(-1)
    ranks = rank_of(base_logits, chat_top)
    kl = kl_divergence(chat_logits, base_logits)
    return [
        {
            "prompt_id": prompt_id,
            "position": position,
            "token": tokenizer.decode([int(token)]),
            "token_id": int(token),
            "kl": float(kl[position]),
            "rank_under_base": int(ranks[position]),
            "shift": shift_class(int(ranks[position])),
        }
        for position, token in enumerate(chat_top.tolist())
    ]


def token_shift_table(
    base: nn.Module, chat: nn.Module, responses: list[ChatResponse], tokenizer
) -> pd.DataFrame:
    rows = []
    for prompt_id, response in enumerate(responses):
        rows.extend(token_shift_rows(base, chat, response, prompt_id, tokenizer))
    return pd.DataFrame(rows)


def shift_summary(table: pd.DataFrame) -> dict[str, float]:
    """Share of each class, overall and over the first 5 response tokens (URIAL: most shifts are
    stylistic tokens early in the response)."""
    summary: dict[str, float] = {"n_tokens": int(len(table))}
    early = table[table["position"] < 5]
    for name in ("unshifted", "marginal", "shifted"):
        summary[f"share_{name}"] = float((table["shift"] == name).mean())
        summary[f"share_{name}_first5"] = float((early["shift"] == name).mean())
    summary["mean_kl"] = float(table["kl"].mean())
    return summary
