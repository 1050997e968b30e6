"""Initialisation (Minder et al. / Bussmann et al.): Kaiming-uniform encoder, identical for every
source; decoder = encoder transpose rescaled to a given norm per (source, latent); b_dec at the
geometric median (or mean) of a data sample; b_enc centring the encoder on b_dec; per-source
input scales."""

import math

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from crosscoders.crosscoder import CrossCoder


def geometric_median(
    points: Float[Tensor, "n d"], max_iter: int = 100, tol: float = 1e-6
) -> Float[Tensor, " d"]:
    """argmin_y sum_i ||p_i - y|| by Weiszfeld's iteration, started at the mean."""
    guess = points.mean(dim=0)
    for _ in range(max_iter):
        weights = 1.0 / (points - guess).norm(dim=-1).clamp_min(1e-12)  # [n]
        new_guess = (weights[:, None] * points).sum(dim=0) / weights.sum()
        if (new_guess - guess).norm() < tol * (1.0 + guess.norm()):
            return new_guess
        guess = new_guess
    return guess


def input_scales(sample: Float[Tensor, "n n_sources d"]) -> Float[Tensor, " n_sources"]:
    """Per-source factor that makes the mean activation norm sqrt(d) (Minder et al.)."""
    return math.sqrt(sample.shape[-1]) / sample.norm(dim=-1).mean(dim=0)


@torch.no_grad()
def initialize(
    coder: CrossCoder,
    sample: Float[Tensor, "n n_sources d"],
    generator: torch.Generator,
    b_dec_init: str = "geometric_median",
    normalize_inputs: bool = True,
) -> None:
    """Initialise `coder` in place from a raw activation sample."""
    coder.check_input(sample)
    config = coder.config
    sample = sample.float()
    coder.input_scale.copy_(
        input_scales(sample) if normalize_inputs else torch.ones(config.n_sources)
    )
    # Kaiming-uniform (gain sqrt(2), fan_in = d): U(-sqrt(6 / d), sqrt(6 / d)), one matrix for all m
    bound = math.sqrt(6.0 / config.d_model)
    weight = (torch.rand(config.d_model, config.dict_size, generator=generator) * 2 - 1) * bound
    decoder = rearrange(weight, "d f -> f d")
    decoder = decoder / decoder.norm(dim=-1, keepdim=True) * config.decoder_init_norm  # ||d_j^m||
    coder.W_dec.copy_(decoder.expand(config.n_sources, -1, -1))  # [S F d]
    coder.W_enc.copy_(rearrange(coder.W_dec, "s f d -> s d f"))  # encoder = decoder^T
    scaled = sample * coder.input_scale[:, None]
    for m in range(config.n_sources):
        if b_dec_init == "geometric_median":
            coder.b_dec[m] = geometric_median(scaled[:, m])
        elif b_dec_init == "mean":
            coder.b_dec[m] = scaled[:, m].mean(dim=0)
        else:
            coder.b_dec[m] = 0.0
    # At init f = ReLU(sum_m (x_m - b_dec^m) W_enc^m), the centred encoder of Gao et al. /
    # dictionary_learning: b_enc = 0 if the model is centred (`apply_b_dec_to_input`, SAEs), else
    # (Minder et al.'s form, no b_dec inside the encoder) b_enc = -sum_m b_dec^m W_enc^m. Residual
    # streams have a large common offset; without this every latent starts out reading it (held-out
    # FVE 0.16 instead of 0.58 after 60 steps of the SAE benchmark).
    if config.apply_b_dec_to_input:
        coder.b_enc.zero_()
    else:
        coder.b_enc.copy_(-torch.einsum("sd,sdf->f", coder.b_dec, coder.W_enc))
