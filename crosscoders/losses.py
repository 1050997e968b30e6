"""Loss terms and reconstruction metrics, each next to its formula.

Convention (DESIGN.md): x and x_hat are [batch, n_sources, d] in the coder's normalised units;
every loss is a mean over the (local) batch of a per-token sum, so DDP's gradient averaging turns
it into the mean over the global batch.
"""

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from crosscoders import ddp


def reconstruction_loss(
    x: Float[Tensor, "batch n_sources d"], x_hat: Float[Tensor, "batch n_sources d"]
) -> Tensor:
    """L_rec = mean_n sum_m ||x_m - x_hat_m||^2: squared L2 error summed over sources (the paper's
    1/2||e_base||^2 + 1/2||e_chat||^2 up to the factor 2; the reference code's un-squared norm
    is not used)."""
    return (x - x_hat).pow(2).sum(dim=(1, 2)).mean()


def decoder_weighted_l1(f: Float[Tensor, "batch F"], s: Float[Tensor, " F"]) -> Tensor:
    """L_sparsity = mean_n sum_j f_j * s_j with s_j = sum_m ||d_j^m|| (Anthropic / Minder et al.
    L1 crosscoder; the coefficient mu is applied by the caller)."""
    return (f * s).sum(dim=-1).mean()


def auxk_loss(
    error: Float[Tensor, "batch n_sources d"], error_hat: Float[Tensor, "batch n_sources d"]
) -> Tensor:
    """Gao et al. 2024 AuxK, OpenAI normalisation:
    L_aux = sum_n ||e_n - e_hat_n||^2 / sum_n ||e_n - mean_n(e)||^2, sums over sources and d.

    `error` is the detached residual x - x_hat; `error_hat` its reconstruction by the top k_aux
    dead latents without b_dec. The denominator uses the global batch (all ranks); the result is
    multiplied by the world size so that DDP's gradient averaging yields the global ratio."""
    count = ddp.all_reduce_sum(torch.tensor(float(error.shape[0]), device=error.device))
    mean_error = ddp.all_reduce_sum(error.sum(dim=0)) / count  # [n_sources d]
    denominator = ddp.all_reduce_sum((error - mean_error).pow(2).sum())
    numerator = (error - error_hat).pow(2).sum()
    return (numerator / denominator.clamp_min(1e-12)) * ddp.world_size()


def fraction_of_variance_explained(
    x: Float[Tensor, "batch n_sources d"], x_hat: Float[Tensor, "batch n_sources d"]
) -> Float[Tensor, " n_sources"]:
    """FVE_m = 1 - sum_d var_n(x_m - x_hat_m) / sum_d var_n(x_m), one value per source."""
    residual_variance = (x - x_hat).var(dim=0, unbiased=False).sum(dim=-1)
    total_variance = x.var(dim=0, unbiased=False).sum(dim=-1)
    return 1.0 - residual_variance / total_variance


# Massive-norm tokens (cf. Sun et al. 2024, "Massive Activations in Large Language Models"): a few
# tokens whose residual norm is ~10x the median (Gemma 3 270M: an apostrophe late in a context,
# ~3 in 30k).
# A token is massive when its norm in ANY source exceeds `ratio` x that source's median token norm
# over the evaluated tokens (torch's lower median). FVE is reported with and without them
# (`crosscoders.evaluate.reconstruction_metrics`), since one such token can carry most of the error.
def massive_norm_thresholds(
    norms: Float[Tensor, "n n_sources"], ratio: float
) -> Float[Tensor, " n_sources"]:
    """ratio x the median token norm of each source."""
    return ratio * norms.median(dim=0).values


def massive_token_mask(
    norms: Float[Tensor, "n n_sources"], thresholds: Float[Tensor, " n_sources"]
) -> Bool[Tensor, " n"]:
    """True for the tokens whose norm exceeds the threshold in at least one source."""
    return (norms > thresholds.to(norms.device)).any(dim=-1)
