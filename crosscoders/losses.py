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
    """L_rec = mean_n sum_m ||x_m - x_hat_m||^2: squared L2 error summed over sources (the top-k
    kinds; Bussmann et al., as dictionary_learning's BatchTopK SAE trainer: crosscoder_learning
    @b2363ed, dictionary_learning/trainers/batch_top_k.py l.199, per source)."""
    return (x - x_hat).pow(2).sum(dim=(1, 2)).mean()


def l2_reconstruction_loss(
    x: Float[Tensor, "batch n_sources d"], x_hat: Float[Tensor, "batch n_sources d"]
) -> Tensor:
    """L_rec = mean_n (1/S) sum_m ||x_m - x_hat_m||_2: the UN-squared L2 error, meaned over the
    batch and over the sources (relu_l1). This is the loss the L1 crosscoder's mu = 0.041 was tuned
    for: science-of-finetuning/crosscoder_learning @b2363ed, dictionary_learning/trainers/
    crosscoder.py, CrossCoderTrainer.loss l.189 (the L2 norm over d of x - x_hat, x of shape
    [batch, num_layers, d], meaned over batch and layers) and l.202 (loss = that + mu * L1).
    Homogeneous of degree 1 in the activations, like the L1 term, so mu does not depend on the
    input scale."""
    return (x - x_hat).norm(dim=-1).mean()


def decoder_weighted_l1(f: Float[Tensor, "batch F"], s: Float[Tensor, " F"]) -> Tensor:
    """L_sparsity = mean_n sum_j f_j * s_j with s_j = sum_m ||d_j^m|| (Anthropic / Minder et al.
    L1 crosscoder; the coefficient mu is applied by the caller). Reference: CrossCoderTrainer.loss
    l.195 (L1 norm of the code that CrossCoder.forward returns times its code normalisation, for
    CROSSCODER the decoder norms summed over layers: dictionary.py get_code_normalization)."""
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
