"""A two-model crosscoder seen from the diffing analyses: sources ordered [base, chat] whatever
the coder's own order, in two unit systems.

The coder scales its inputs per source (x_in = c_m x_raw, `input_scale`, so that each source has
mean norm sqrt(d)); its decoder vectors, reconstructions and errors live in these scaled units.
- Coder units (`scale`, `decode_scaled`, `W_dec`): the units the coder was trained in and its
  losses are computed in. The relative decoder norm (crosscoders.decoder_norms) and Latent Scaling
  (latent_scaling.py) are read here: Latent Scaling regresses the coder's own reconstruction and
  error on the coder's own decoder vector, so beta(base) / beta(chat) compares the two models on
  the coder's common scale. (In raw units, with the regressor d_j^chat / c_chat and targets
  x_base, x^_base in base's raw units, every nu picks up the factor c_chat / c_base, the ratio of
  the models' mean activation norms.)
- Raw units (`encode`, `decode`, `W_dec_raw`): a model's own residual stream. Every analysis that
  adds decoder vectors to a residual (the causal patch) or reads them through a model's unembedding
  (decoder logits) uses d_j^m / c_m."""

from dataclasses import dataclass

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor

from crosscoders.crosscoder import CrossCoder
from interp.errors import InterpError


@dataclass
class PairDictionary:
    coder: CrossCoder
    base_index: int
    chat_index: int
    layer: int

    @classmethod
    def from_coder(cls, coder: CrossCoder, layer: int | None = None) -> "PairDictionary":
        config = coder.config
        if config.n_sources != 2:
            raise InterpError(
                f"model diffing needs a 2-source (base, chat) crosscoder, got n_sources = "
                f"{config.n_sources}"
            )
        # source names are the cache roles, "base" / "chat" (or "base/9" for multi-layer caches)
        roles = [source.name.split("/")[0] for source in config.sources]
        base = roles.index("base") if "base" in roles else 0
        chat = roles.index("chat") if "chat" in roles else 1
        if layer is None:
            layers = {source.layer for source in config.sources}
            if len(layers) != 1:
                raise InterpError(
                    f"cannot tell the dictionary's layer from its sources {config.sources}: "
                    "expected both sources at one layer, or pass the layer"
                )
            layer = layers.pop()
        return cls(coder, base, chat, int(layer))

    @property
    def order(self) -> list[int]:
        """Coder source index of [base, chat]."""
        return [self.base_index, self.chat_index]

    @property
    def dict_size(self) -> int:
        return self.coder.config.dict_size

    def to_coder_order(self, x: Float[Tensor, "batch 2 d"]) -> Float[Tensor, "batch 2 d"]:
        out = torch.empty_like(x)
        out[:, self.order] = x
        return out

    @torch.no_grad()
    def encode(self, x: Float[Tensor, "batch 2 d"]) -> Float[Tensor, "batch F"]:
        """Latent activations (inference mode) of raw [base, chat] activations."""
        return self.coder.encode(self.to_coder_order(x.to(self.coder.W_enc.dtype)))

    @torch.no_grad()
    def encoder_inputs(
        self, x: Float[Tensor, "n 2 d"], latents: Int[Tensor, " n"]
    ) -> Float[Tensor, "2 n"]:
        """Each model's term x_m . W_enc^m[:, j] of latent j = `latents[i]`'s pre-activation on
        raw activations `x[i]` (coder units), [base, chat]: which model drives the latent."""
        scaled = self.scale(x)  # [n 2 d]
        columns = self.coder.W_enc[self.order][:, :, latents]  # [2 d n]
        return einsum(scaled, columns, "n m d, m d n -> m n")

    @torch.no_grad()
    def decode(self, f: Float[Tensor, "batch F"]) -> Float[Tensor, "batch 2 d"]:
        """Raw-unit reconstruction [base, chat]."""
        return self.coder.decode(f)[:, self.order]

    @torch.no_grad()
    def scale(self, x: Float[Tensor, "batch 2 d"]) -> Float[Tensor, "batch 2 d"]:
        """Raw [base, chat] activations in coder units: c_m x_m."""
        scale = self.coder.input_scale[self.order]
        return x.to(self.coder.W_enc.dtype) * scale[:, None]

    @torch.no_grad()
    def decode_scaled(self, f: Float[Tensor, "batch F"]) -> Float[Tensor, "batch 2 d"]:
        """Coder-unit reconstruction [base, chat]: f W_dec^m + b_dec^m."""
        return self.coder.decode_scaled(f)[:, self.order]

    @property
    def W_dec(self) -> Float[Tensor, "2 F d"]:
        """Decoder vectors d_j^m in coder units, [base, chat]."""
        return self.coder.W_dec[self.order].detach()

    @property
    def W_dec_raw(self) -> Float[Tensor, "2 F d"]:
        """Decoder vectors d_j^m / c_m, [base, chat]."""
        scale = self.coder.input_scale[self.order]
        return (self.coder.W_dec[self.order] / scale[:, None, None]).detach()
