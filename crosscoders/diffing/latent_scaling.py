"""Latent Scaling (Minder et al. 2025, sec. 3): how much of latent j's chat direction each model's
activations contain, in closed form, for every latent in one streaming pass.

For latent j, model m and a target y_n (one vector per token), the least-squares scale is

    beta_j = argmin_b sum_n ||y_n - b f_j(x_n) d_j||^2
           = (d_j . sum_n f_j(x_n) y_n) / (||d_j||^2 sum_n f_j(x_n)^2)          (eq. 4)

with the regressor d_j = the CHAT decoder vector of latent j, for two targets per model m:
- reconstruction   y = x̂_m                                  -> beta_r(m)
- error            y = x_m - (x̂_m - f_j d_j^m)              -> beta_eps(m)
  (the error of model m with latent j's own contribution, through model m's OWN decoder vector
  d_j^m, added back: sparsity-artifacts-crosscoders, scripts/compute_scalers.py, load_base_error
  removes f_j d_j^base from the base reconstruction and load_chat_error f_j d_j^chat from the chat
  one, tools/latent_scaler/closed_form.py remove_latents).
Ratios: nu_r = beta_r(base) / beta_r(chat), nu_eps = beta_eps(base) / beta_eps(chat).

Units: everything (x, x̂, d_j) is in the CODER's units, x_m scaled by the coder's input_scale c_m
(pair_dictionary.py), the units the coder was trained and its decoder norms are read in. With raw
activations and raw-unit decoders every nu would pick up c_chat / c_base; in coder units a latent
that decodes identically into both models has nu_r = 1 whatever the models' activation norms, and
multiplying one model's activations by a constant (with the coder's c_m divided by it) changes no
nu. `update_pair` takes raw activations and does the conversion.

Vectorisation (no [batch, F, d] tensor is ever built): per batch, the sparse code f^T [F, batch]
times the four stacked targets Y [batch, 4d] gives sum_n f_nj y_n for every latent (only firing
entries cost anything: L0 * 4d multiply-adds per token), then one dot product with d_j per
latent and target; the error target is expanded as
    sum_n f_nj d_j.(x - x̂ + f_nj d_j^m) = d_j . sum_n f_nj (x - x̂) + (d_j . d_j^m) sum_n f_nj^2.
"""

from dataclasses import dataclass

import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor

from crosscoders.diffing.firings import Firings
from crosscoders.diffing.pair_dictionary import PairDictionary

# The chat-specific rule of the paper (sec. 4): a latent is chat-specific when its chat decoder
# dominates (Delta >= 0.9) AND base reconstructs neither its error share nor its reconstruction
# share: nu_eps < 0.2 and nu_r < 0.5.
CHAT_ONLY_DELTA = 0.9
NU_EPS_THRESHOLD = 0.2
NU_R_THRESHOLD = 0.5


@dataclass
class LatentScalingSums:
    """Running sums of eq. 4 for all latents; `update` once per batch, `betas` at the end."""

    sum_f2: Float[Tensor, " F"]
    numerator_r: Float[Tensor, "2 F"]  # [base, chat]: sum_n f_nj d_j . x̂_m
    numerator_eps: Float[Tensor, "2 F"]  # [base, chat]: sum_n f_nj d_j . (x_m - x̂_m + f_nj d_j^m)
    n_tokens: int = 0

    @classmethod
    def zeros(cls, dict_size: int, device: torch.device | str = "cpu") -> "LatentScalingSums":
        def zeros(*shape: int) -> Tensor:
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        return cls(zeros(dict_size), zeros(2, dict_size), zeros(2, dict_size))

    @torch.no_grad()
    def update(
        self,
        codes: Firings,
        x: Float[Tensor, "batch 2 d"],
        x_hat: Float[Tensor, "batch 2 d"],
        W_dec: Float[Tensor, "2 F d"],
    ) -> None:
        """Add one batch. Sources are ordered [base, chat]; W_dec[1] is the regressor."""
        d_chat = W_dec[1]
        # targets per token: x̂_base, x̂_chat, (x - x̂)_base, (x - x̂)_chat
        targets = torch.cat([x_hat, x - x_hat], dim=1)  # [batch 4 d]
        f_t = torch.sparse_coo_tensor(
            torch.stack([codes.latents, codes.rows]),
            codes.values,
            (codes.dict_size, codes.batch_size),
        )
        weighted = torch.sparse.mm(f_t, targets.flatten(1)).view(codes.dict_size, 4, -1)
        numerators = einsum(weighted, d_chat, "F t d, F d -> t F").double()  # d_j . sum f_nj y_n
        sum_f2 = torch.zeros_like(self.sum_f2).index_add_(
            0, codes.latents, codes.values.double() ** 2
        )
        # (d_j . d_j^m) for both models: the self-contribution added back in the error target
        self_overlap = einsum(W_dec, d_chat, "m F d, F d -> m F").double()
        self.numerator_r += numerators[:2]
        self.numerator_eps += numerators[2:] + self_overlap * sum_f2
        self.sum_f2 += sum_f2
        self.n_tokens += codes.batch_size

    @torch.no_grad()
    def update_pair(
        self,
        dictionary: PairDictionary,
        x_raw: Float[Tensor, "batch 2 d"],
        f: Float[Tensor, "batch F"],
        codes: Firings,
    ) -> None:
        """Add one batch of raw [base, chat] activations with their code f (`codes` = its
        firings), in the coder's units: targets c_m x_m and f W_dec^m + b_dec^m, regressor the
        coder's d_j^chat. `betas` then takes `dictionary.W_dec`."""
        self.update(codes, dictionary.scale(x_raw), dictionary.decode_scaled(f), dictionary.W_dec)

    def betas(self, W_dec: Float[Tensor, "2 F d"]) -> dict[str, Float[Tensor, " F"]]:
        """beta_r / beta_eps per model (eq. 4), on the CPU; NaN where undefined (the latent never
        fired or its chat decoder is 0)."""
        norm2 = W_dec[1].double().pow(2).sum(-1).to(self.sum_f2.device)
        denominator = norm2 * self.sum_f2
        denominator = torch.where(denominator > 0, denominator, torch.nan)
        beta_r = self.numerator_r / denominator
        beta_eps = self.numerator_eps / denominator
        return {
            "beta_r_base": beta_r[0].cpu(),
            "beta_r_chat": beta_r[1].cpu(),
            "beta_eps_base": beta_eps[0].cpu(),
            "beta_eps_chat": beta_eps[1].cpu(),
        }


def scaling_ratios(betas: dict[str, Tensor]) -> dict[str, Tensor]:
    """nu_r = beta_r(base) / beta_r(chat), nu_eps = beta_eps(base) / beta_eps(chat)."""
    return {
        "nu_r": betas["beta_r_base"] / betas["beta_r_chat"],
        "nu_eps": betas["beta_eps_base"] / betas["beta_eps_chat"],
    }


def scaling_flags(
    relative_norm: Float[Tensor, " F"], nu_r: Float[Tensor, " F"], nu_eps: Float[Tensor, " F"]
) -> dict[str, Tensor]:
    """The paper's diagnosis of chat-only latents (Delta >= 0.9; False for every other latent and
    wherever nu is undefined):
    - Complete Shrinkage: the base error still holds the latent's direction (nu_eps >= 0.2): the
      sparsity penalty shrank d^base to zero although the concept is present in base.
    - Latent Decoupling: base reconstructs the direction with other latents (nu_r >= 0.5).
    - chat-specific: neither (nu_eps < 0.2 and nu_r < 0.5)."""
    chat_only = relative_norm >= CHAT_ONLY_DELTA
    defined = torch.isfinite(nu_r) & torch.isfinite(nu_eps)
    candidates = chat_only & defined
    return {
        "complete_shrinkage": candidates & (nu_eps >= NU_EPS_THRESHOLD),
        "latent_decoupling": candidates & (nu_r >= NU_R_THRESHOLD),
        "chat_specific": candidates & (nu_eps < NU_EPS_THRESHOLD) & (nu_r < NU_R_THRESHOLD),
    }
