"""KL divergence between next-token distributions, the one formula of the causal test, the token
shift and the splice metrics:

    KL(P || Q) = sum_v P(v) (log P(v) - log Q(v))          per position, over the vocabulary
"""

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def kl_from_log_probs(
    log_p: Float[Tensor, "*positions vocab"], log_q: Float[Tensor, "*positions vocab"]
) -> Float[Tensor, " *positions"]:
    """KL(P || Q) per position, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def kl_divergence(
    logits_p: Float[Tensor, "*positions vocab"], logits_q: Float[Tensor, "*positions vocab"]
) -> Float[Tensor, " *positions"]:
    """KL(P || Q) per position, from logits (in float32)."""
    return kl_from_log_probs(
        F.log_softmax(logits_p.float(), dim=-1), F.log_softmax(logits_q.float(), dim=-1)
    )
