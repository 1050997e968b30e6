"""The crosscoder: one sparse dictionary read from and written to n_sources activation streams.

Notation (Minder et al. 2025, eq. 1-2): sources m = 1..S (models x layers), latents j = 1..F.
    f     = ReLU(sum_m x_m W_enc^m + b_enc)                   pre-sparsity latents   [batch F]
    s_j   = sum_m ||d_j^m||,  d_j^m = W_dec[m, j]               summed decoder norms   [F]
    f~    = sparsify(f, s)    (activations.py: relu_l1 | topk | batchtopk | jumprelu)
    x^_m  = f~ W_dec^m + b_dec^m                                reconstruction         [batch S d]
    L     = sum_m ||x_m - x^_m||^2 + mu sum_j f~_j s_j (relu_l1) + alpha L_aux (top-k kinds)
An SAE is the case S = 1. Inputs are first scaled per source by `input_scale` (so that the mean
norm is sqrt(d), Minder et al.); encode/decode/forward take and return raw activations, the losses
are computed in scaled units.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from crosscoders import losses
from crosscoders.activations import ACTIVATIONS, Activation, SparseCode
from crosscoders.config import CrossCoderConfig
from interp.errors import InterpError


@dataclass
class LossOutput:
    total: Tensor
    terms: dict[str, Tensor]  # each weighted term of `total`, by name
    x: Float[Tensor, "batch n_sources d"]  # scaled input
    x_hat: Float[Tensor, "batch n_sources d"]  # scaled reconstruction
    f: Float[Tensor, "batch F"]  # sparse code
    min_kept_g: Tensor | None  # batchtopk: the smallest kept g = f_j * s_j of the batch


class CrossCoder(nn.Module):
    def __init__(self, config: CrossCoderConfig) -> None:
        super().__init__()
        self.config = config
        S, d, F = config.n_sources, config.d_model, config.dict_size
        self.W_enc = nn.Parameter(torch.zeros(S, d, F))
        self.b_enc = nn.Parameter(torch.zeros(F))
        self.W_dec = nn.Parameter(torch.zeros(S, F, d))
        self.b_dec = nn.Parameter(torch.zeros(S, d))
        self.register_buffer("input_scale", torch.ones(S))
        for name, make in self.activation.buffers.items():
            self.register_buffer(name, make(F))

    @property
    def activation(self) -> Activation:
        return ACTIVATIONS[self.config.activation]

    def check_input(self, x: Tensor) -> None:
        expected = (self.config.n_sources, self.config.d_model)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise InterpError(
                f"activations of shape {tuple(x.shape)} do not fit this dictionary: expected "
                f"[batch, n_sources={expected[0]}, d_model={expected[1]}]"
            )

    def scale(self, x: Float[Tensor, "batch n_sources d"]) -> Float[Tensor, "batch n_sources d"]:
        self.check_input(x)
        return x * self.input_scale[:, None]

    def decoder_norms(self) -> Float[Tensor, "n_sources F"]:
        return self.W_dec.norm(dim=-1)  # ||d_j^m||

    # --- the model, as in the module docstring -------------------------------------------------

    def pre_activations(self, x: Float[Tensor, "batch n_sources d"]) -> Float[Tensor, "batch F"]:
        # sum_m x_m W_enc^m + b_enc
        return torch.einsum("bsd,sdf->bf", x, self.W_enc) + self.b_enc

    def encode_scaled(self, x: Float[Tensor, "batch n_sources d"]) -> tuple[SparseCode, Tensor]:
        f = torch.relu(self.pre_activations(x))  # [batch F]
        s = self.decoder_norms().sum(dim=0)  # [F]: s_j = sum_m ||d_j^m||
        return self.activation.sparsify(f, s, self), f

    def decode_scaled(self, f: Float[Tensor, "batch F"]) -> Float[Tensor, "batch n_sources d"]:
        # x^_m = f W_dec^m + b_dec^m
        return torch.einsum("bf,sfd->bsd", f, self.W_dec) + self.b_dec

    def encode(self, x: Float[Tensor, "batch n_sources d"]) -> Float[Tensor, "batch F"]:
        return self.encode_scaled(self.scale(x))[0].f

    def decode(self, f: Float[Tensor, "batch F"]) -> Float[Tensor, "batch n_sources d"]:
        return self.decode_scaled(f) / self.input_scale[:, None]

    def forward(self, x: Float[Tensor, "batch n_sources d"]) -> Float[Tensor, "batch n_sources d"]:
        return self.decode(self.encode(x))

    def loss(
        self, x_raw: Float[Tensor, "batch n_sources d"], dead: Bool[Tensor, " F"] | None = None
    ) -> LossOutput:
        """The training objective on one (local) batch; `dead` marks latents for AuxK."""
        x = self.scale(x_raw)
        code, f_relu = self.encode_scaled(x)
        x_hat = self.decode_scaled(code.f)
        terms = {"reconstruction": losses.reconstruction_loss(x, x_hat)}
        if self.config.activation == "relu_l1":
            s = self.decoder_norms().sum(dim=0)
            terms["l1"] = self.config.l1_coefficient * losses.decoder_weighted_l1(code.f, s)
        elif self.config.auxk_alpha > 0 and dead is not None and bool(dead.any()):
            error_hat = self.decode_dead_latents(f_relu, dead)
            terms["auxk"] = self.config.auxk_alpha * losses.auxk_loss(
                (x - x_hat).detach(), error_hat
            )
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, terms, x, x_hat, code.f, code.min_kept_g)

    def decode_dead_latents(
        self, f: Float[Tensor, "batch F"], dead: Bool[Tensor, " F"]
    ) -> Float[Tensor, "batch n_sources d"]:
        """AuxK (Gao et al.): per token, the top k_aux dead latents by g = f_j s_j, decoded
        without b_dec (they model the residual error, not the input)."""
        s = self.decoder_norms().sum(dim=0)
        g = torch.where(dead, f * s, torch.full_like(f, -torch.inf))
        k_aux = min(self.config.k_aux, int(dead.sum()))
        top = g.topk(k_aux, dim=-1)
        f_aux = torch.zeros_like(f).scatter(-1, top.indices, f.gather(-1, top.indices))
        return torch.einsum("bf,sfd->bsd", f_aux, self.W_dec)

    @torch.no_grad()
    def update_inference_threshold(self, min_kept_g: Tensor, step: int) -> None:
        """BatchTopK theta (Bussmann et al.): after `threshold_start_step` steps,
        theta <- beta * theta + (1 - beta) * min kept g; the first update sets theta directly."""
        if "threshold" not in self.activation.buffers or step < self.config.threshold_start_step:
            return
        theta = self.get_buffer("threshold")
        beta = self.config.threshold_beta
        theta.copy_(min_kept_g if theta < 0 else beta * theta + (1 - beta) * min_kept_g)
