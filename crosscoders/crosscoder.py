"""The crosscoder: one sparse dictionary read from and written to n_sources activation streams.

Notation (Minder et al. 2025, eq. 1-2): sources m = 1..S (models x layers), latents j = 1..F.
    f     = ReLU(sum_m x_m W_enc^m + b_enc)                   pre-sparsity latents   [batch F]
    s_j   = sum_m ||d_j^m||,  d_j^m = W_dec[m, j]               summed decoder norms   [F]
    f~    = f * keep(f, s)    (activations.py: relu_l1 | topk | batchtopk | jumprelu)
    x^_m  = f~ W_dec^m + b_dec^m                                reconstruction         [batch S d]
    L     = sum_m ||x_m - x^_m||^2 + alpha L_aux                (top-k kinds: topk, batchtopk)
    L     = (1/S) sum_m ||x_m - x^_m||_2 + mu sum_j f_j s_j     (relu_l1; un-squared, no AuxK)
(each a mean over the batch; losses.py has the reference line of each term).
An SAE is the case S = 1, with the SAE conventions of Gao et al. / Bussmann et al. (config
`apply_b_dec_to_input`, `unit_norm_decoder`, on by default for S = 1):
    f     = ReLU((x - b_dec) W_enc + b_enc)                   encoder centred on b_dec
    ||d_j|| = 1                                               after every optimizer step, with the
                                                              gradient along d_j removed before it
so that s_j = 1 and top-k ranks by f_j. Inputs are first scaled per source by `input_scale` (so
that the mean norm is sqrt(d), Minder et al.); encode/decode/forward take and return raw
activations, the losses are computed in scaled units.
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from crosscoders import losses
from crosscoders.activations import ACTIVATIONS, Activation, Selection
from crosscoders.config import CrossCoderConfig
from crosscoders.sparse_ops import kept_pre_activations, sparse_decode
from interp.errors import InterpError


@dataclass
class LossOutput:
    total: Tensor
    terms: dict[str, Tensor]  # each weighted term of `total`, by name
    x: Float[Tensor, "batch n_sources d"]  # scaled input
    x_hat: Float[Tensor, "batch n_sources d"]  # scaled reconstruction
    l0: Tensor  # mean number of kept latents per token
    fired: Bool[Tensor, " F"]  # latents kept for at least one token of the batch
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

    def encoder_bias(self) -> Float[Tensor, " F"]:
        """The bias of sum_m x_m W_enc^m: b_enc, or with `apply_b_dec_to_input` the centred encoder
        sum_m (x_m - b_dec^m) W_enc^m + b_enc folded into b_enc - sum_m b_dec^m W_enc^m (so b_dec
        and W_enc get the gradients of the centred form)."""
        if not self.config.apply_b_dec_to_input:
            return self.b_enc
        return self.b_enc - torch.einsum("sd,sdf->f", self.b_dec, self.W_enc)

    def pre_activations(self, x: Float[Tensor, "batch n_sources d"]) -> Float[Tensor, "batch F"]:
        # sum_m x_m W_enc^m + b_enc   (sum_m (x_m - b_dec^m) W_enc^m + b_enc if centred)
        return torch.einsum("bsd,sdf->bf", x, self.W_enc) + self.encoder_bias()

    def select(self, f: Float[Tensor, "batch F"]) -> Selection:
        s = self.decoder_norms().sum(dim=0)  # [F]: s_j = sum_m ||d_j^m||
        return self.activation.select(f, s, self)

    def decode_scaled(self, f: Float[Tensor, "batch F"]) -> Float[Tensor, "batch n_sources d"]:
        # x^_m = f W_dec^m + b_dec^m
        return torch.einsum("bf,sfd->bsd", f, self.W_dec) + self.b_dec

    def encode(self, x: Float[Tensor, "batch n_sources d"]) -> Float[Tensor, "batch F"]:
        f = torch.relu(self.pre_activations(self.scale(x)))
        return f * self.select(f).keep

    def decode(self, f: Float[Tensor, "batch F"]) -> Float[Tensor, "batch n_sources d"]:
        return self.decode_scaled(f) / self.input_scale[:, None]

    def forward(self, x: Float[Tensor, "batch n_sources d"]) -> Float[Tensor, "batch n_sources d"]:
        return self.decode(self.encode(x))

    def dead_latent_selection(
        self, f: Float[Tensor, "batch F"], dead: Bool[Tensor, " F"]
    ) -> Bool[Tensor, "batch F"]:
        """AuxK (Gao et al.): per token, the top k_aux dead latents by g = f_j s_j."""
        s = self.decoder_norms().sum(dim=0)
        g = torch.where(dead, f * s, torch.full_like(f, -torch.inf))
        top = g.topk(min(self.config.k_aux, int(dead.sum())), dim=-1)
        return torch.zeros_like(f, dtype=torch.bool).scatter_(-1, top.indices, True)

    def loss(
        self,
        x_raw: Float[Tensor, "batch n_sources d"],
        dead: Bool[Tensor, " F"] | None = None,
        sparse: bool | None = None,
    ) -> LossOutput:
        """The training objective on one (local) batch; `dead` marks latents for AuxK.
        `sparse` (default: the activation's `sparse_training`) computes the same values and
        gradients with the kernels of sparse_ops.py."""
        x = self.scale(x_raw)
        top_k = self.activation.top_k
        # AuxK revives dead latents of the top-k kinds only (Gao et al.; the L1 crosscoder of
        # Minder et al. has no auxiliary loss: crosscoder_learning's CrossCoderTrainer.loss l.202)
        use_aux = top_k and self.config.auxk_alpha > 0 and dead is not None and bool(dead.any())
        if self.activation.sparse_training if sparse is None else sparse:
            x_hat, error_hat, selection, cols = self._sparse_reconstructions(
                x, dead if use_aux else None
            )
            l0 = torch.tensor(cols.numel() / x.shape[0], device=x.device)
            fired = torch.bincount(cols, minlength=self.config.dict_size) > 0
        else:
            f = torch.relu(self.pre_activations(x))  # [batch F]
            selection = self.select(f)
            code = f * selection.keep
            x_hat = self.decode_scaled(code)
            l0, fired = selection.keep.sum(-1).float().mean(), selection.keep.any(0)
            error_hat = None
            if use_aux:  # the dead latents' code, decoded without b_dec: it models the error
                aux_code = f * self.dead_latent_selection(f.detach(), dead)
                error_hat = torch.einsum("bf,sfd->bsd", aux_code, self.W_dec)
        if top_k:
            terms = {"reconstruction": losses.reconstruction_loss(x, x_hat)}
        else:  # relu_l1: the loss mu = 0.041 was tuned for (Minder et al.; losses.py)
            terms = {"reconstruction": losses.l2_reconstruction_loss(x, x_hat)}
        if self.config.activation == "relu_l1":
            s = self.decoder_norms().sum(dim=0)
            terms["l1"] = self.config.l1_coefficient * losses.decoder_weighted_l1(code, s)
        if error_hat is not None:
            error = (x - x_hat).detach()
            terms["auxk"] = self.config.auxk_alpha * losses.auxk_loss(error, error_hat)
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, terms, x, x_hat, l0, fired, selection.min_kept_g)

    def _sparse_reconstructions(
        self, x: Float[Tensor, "batch n_sources d"], dead: Bool[Tensor, " F"] | None
    ) -> tuple[Tensor, Tensor | None, Selection, Tensor]:
        """x^ (and the AuxK reconstruction of the error) from the kept entries only; also the
        latent index of every kept entry."""
        batch = x.shape[0]
        x_flat = rearrange(x, "b s d -> b (s d)")
        W_enc = rearrange(self.W_enc, "s d f -> (s d) f")
        W_dec = rearrange(self.W_dec, "s f d -> f (s d)")
        b_enc = self.encoder_bias()
        with torch.no_grad():  # dense pass without a graph; kept entries are re-read below
            # (under bf16 autocast this matmul runs in bf16; the sparse kernels below in float32)
            f = torch.addmm(b_enc, x_flat, W_enc).float().relu_()  # [batch F]
            selection = self.select(f)

        def decode_kept(keep: Bool[Tensor, "batch F"]) -> tuple[Tensor, Tensor]:
            rows, cols = keep.nonzero(as_tuple=True)  # sorted by row
            # f at the kept entries, with gradients to W_enc and b_enc (ReLU'(pre) = 1 there
            # unless f = 0, which only a top-k with too few positive entries keeps)
            with torch.autocast(x.device.type, enabled=False):  # sparse kernels: float32 only
                values = torch.relu(kept_pre_activations(x_flat, W_enc, b_enc, f, rows, cols))
                decoded = sparse_decode(rows, cols, values, W_dec, batch)
            return rearrange(decoded, "b (s d) -> b s d", s=self.config.n_sources), cols

        x_hat, cols = decode_kept(selection.keep)
        error_hat = None if dead is None else decode_kept(self.dead_latent_selection(f, dead))[0]
        return x_hat + self.b_dec, error_hat, selection, cols

    @torch.no_grad()
    def remove_decoder_gradient_along_decoder(self) -> None:
        """`unit_norm_decoder` (Bussmann et al., dictionary_learning):
        dL/dd_j -= (dL/dd_j . u_j) u_j with u_j = d_j / ||d_j||: that component would only change
        ||d_j||, which is fixed at 1."""
        unit = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [S F d]
        grad = self.W_dec.grad
        grad -= (grad * unit).sum(dim=-1, keepdim=True) * unit

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """`unit_norm_decoder`: d_j <- d_j / ||d_j|| (after each optimizer step)."""
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def update_inference_threshold(self, min_kept_g: Tensor | None, step: int) -> None:
        """BatchTopK theta (Bussmann et al.): after `threshold_start_step` steps,
        theta <- beta * theta + (1 - beta) * min kept g; the first update sets theta directly.
        A batch without a positive kept g (None, or a value <= 0) leaves theta unchanged: the
        reference's min runs over the positive kept values only."""
        if "threshold" not in self.activation.buffers or step < self.config.threshold_start_step:
            return
        if min_kept_g is None or min_kept_g <= 0:
            return
        theta = self.get_buffer("threshold")
        beta = self.config.threshold_beta
        theta.copy_(min_kept_g if theta < 0 else beta * theta + (1 - beta) * min_kept_g)
