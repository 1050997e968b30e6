"""Crosscoder latent steering: add a latent's decoder direction to the residual stream, or clamp
the latent's activation to a value (Templeton et al. 2024 "feature steering"; on a base/chat
crosscoder, Minder et al. 2025).

The map acts at one site, `resid_post[l]` of the steered model, where l is the layer of the
crosscoder's source for that model. For the chosen latents j (raw activation units):

    d_j    = W_dec[m, j] / s_m                                   decoder direction of source m
    f_j(x) = ReLU(x . e_j + b_j), kept where > t_j                the latent's activation
             e_j = sum_m' s_m' W_enc[m', :, j],  b_j = the crosscoder's encoder bias

with s_m the crosscoder's input scales. The crosscoder reads every source (base and chat) while
the map runs on one model, so the steered stream x stands in for every source: at one layer the
base and chat residual streams are close. t_j is the crosscoder's own inference gate for latent
j (relu_l1: 0; batchtopk: theta / sum_m ||d_j^m||; jumprelu: its threshold); a top-k dictionary
keeps the k largest of *all* latents, which a map of a few latents cannot see, so there f_j is
the plain ReLU.

Two modes, `v` = `value` and `u` = `inverse_value` per latent, summed over the chosen latents:

    add:    z + lambda sum_j (v_j - u_j) d_j       inverse: z - lambda sum_j (v_j - u_j) d_j
    clamp:  z + lambda sum_j (v_j - f_j(z)) d_j    inverse: clamp to u_j instead of v_j

Clamping at lambda = 1 replaces the latent's share f_j d_j of the crosscoder's reconstruction by
v_j d_j and leaves everything else (the reconstruction error included) untouched; lambda in (0, 1)
interpolates, lambda > 1 overshoots. By hand, `add` with v = scale, u = 0 adds
lambda * scale * d_j. Fitted from source/target texts (`fit_latent_steering`): v_j and u_j are
the latent's mean activation over the target and the source tokens (special tokens left out), so
`add` at lambda = 1 moves each latent's source mean to its target mean along d_j and `clamp`
holds it at the target mean (its inverse at the source mean). The latents chosen automatically
are the n with the largest |mean_target f_j - mean_source f_j| (ties: lower id first), or the
ids given.

On disk: `map.safetensors` (direction, encoder, encoder_bias, threshold, value, inverse_value)
and `map.json` (the latent ids, the mode, and the crosscoder: folder, weights sha256, source).
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from crosscoders.crosscoder import CrossCoder
from crosscoders.io import WEIGHTS_FILE, load_crosscoder
from interp.builtin_models import sha256_file
from interp.errors import InterpError
from steering.activations import TextBatch, site_activations
from steering.sites import resolve_sites
from steering.steering_map import Edit, SteeringMap, register_map

LATENT_MODES = ("add", "clamp")
DEFAULT_N_LATENTS = 8


# ---------------------------------------------------------------------------------------------
# The math: small pure functions
# ---------------------------------------------------------------------------------------------


def latent_activations(
    x: Float[Tensor, "*batch d"],
    encoder: Float[Tensor, "n d"],
    encoder_bias: Float[Tensor, " n"],
    threshold: Float[Tensor, " n"],
) -> Float[Tensor, "*batch n"]:
    """f_j(x) = ReLU(x . e_j + b_j), kept where it exceeds the gate t_j."""
    f = torch.relu(x @ encoder.T + encoder_bias)
    return torch.where(f > threshold, f, 0.0)


def inference_gates(coder: CrossCoder) -> Float[Tensor, " F"]:
    """t_j such that the crosscoder's inference code of latent j is f_j where f_j > t_j
    (crosscoders/activations.py); 0 where the gate is plain ReLU or not per-latent (top-k)."""
    F = coder.config.dict_size
    if coder.config.activation == "batchtopk":
        theta = coder.get_buffer("threshold")
        if theta >= 0:  # learned: keep where g_j = f_j s_j > theta
            s = coder.decoder_norms().sum(dim=0)
            return theta / s.clamp_min(torch.finfo(s.dtype).tiny)
    if coder.config.activation == "jumprelu":
        return coder.get_buffer("jumprelu_threshold").detach().clone()
    return torch.zeros(F, device=coder.W_enc.device)


@torch.no_grad()
def single_stream_encoder(coder: CrossCoder) -> tuple[Float[Tensor, "F d"], Float[Tensor, " F"]]:
    """e_j = sum_m s_m W_enc[m, :, j] and the bias: the encoder with one stream fed to every
    source. The pre-activation is affine in the input, so its value at 0 is the bias (b_enc, or
    a centred encoder's b_enc - sum_m b_dec^m W_enc^m)."""
    encoder = torch.einsum("s,sdf->fd", coder.input_scale, coder.W_enc)
    zeros = torch.zeros(1, coder.config.n_sources, coder.config.d_model, device=encoder.device)
    return encoder.clone(), coder.pre_activations(zeros)[0].clone()


def decoder_directions(coder: CrossCoder, source: int) -> Float[Tensor, "F d"]:
    """d_j = W_dec[m, j] / s_m: one unit of f_j in the raw units of source m (CrossCoder.decode)."""
    return (coder.W_dec[source] / coder.input_scale[source]).detach().clone()


def rank_latents(
    source_activations: Float[Tensor, "n_source F"],
    target_activations: Float[Tensor, "n_target F"],
    n: int,
) -> Int[Tensor, " n"]:
    """The n latents with the largest |mean target activation - mean source activation|."""
    difference = (target_activations.mean(dim=0) - source_activations.mean(dim=0)).abs()
    # a stable sort on -|diff| keeps the lower id first among ties
    return torch.sort(-difference, stable=True).indices[:n]


# ---------------------------------------------------------------------------------------------
# The map
# ---------------------------------------------------------------------------------------------


@register_map("crosscoder-latents")
class LatentSteeringMap(SteeringMap):
    """Add or clamp crosscoder latents at one block output (module doc)."""

    invertible: ClassVar[bool] = True

    def __init__(
        self,
        sites: list[str],
        width: int,
        latents: list[int],
        mode: str = "clamp",
        crosscoder: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(sites, info)
        if len(self.sites) != 1:
            raise InterpError(f"latent steering acts at one site, got {len(self.sites)}: {sites}")
        if mode not in LATENT_MODES:
            raise InterpError(
                f"unknown latent steering mode {mode!r}: expected one of {LATENT_MODES}"
            )
        if not latents or len(set(latents)) != len(latents):
            raise InterpError(f"latent ids {latents}: expected one or more distinct ids")
        self.latents, self.mode = [int(j) for j in latents], mode
        self.crosscoder = dict(crosscoder or {})
        n = len(latents)
        self.register_buffer("direction", torch.zeros(n, width))  # d_j
        self.register_buffer("encoder", torch.zeros(n, width))  # e_j
        self.register_buffer("encoder_bias", torch.zeros(n))  # b_j
        self.register_buffer("threshold", torch.zeros(n))  # t_j
        self.register_buffer("value", torch.zeros(n))  # v_j
        self.register_buffer("inverse_value", torch.zeros(n))  # u_j

    @classmethod
    def from_crosscoder(
        cls,
        coder: CrossCoder,
        source: int,
        site: str,
        latents: Sequence[int],
        value: Sequence[float] | Tensor,
        inverse_value: Sequence[float] | Tensor | None = None,
        mode: str = "clamp",
        folder: str | Path | None = None,
        info: dict[str, Any] | None = None,
    ) -> "LatentSteeringMap":
        """The map of latents `latents` of `coder` for its source `source`, steering at `site`
        (the steered model's block at that source's layer). `inverse_value` defaults to 0."""
        F = coder.config.dict_size
        ids = check_latents(latents, F)
        if not 0 <= source < coder.config.n_sources:
            raise InterpError(
                f"source {source} is out of range: the crosscoder has {coder.config.n_sources}"
            )
        record: dict[str, Any] = {
            "dict_size": F,
            "d_model": coder.config.d_model,
            "activation": coder.config.activation,
            "source_index": source,
        }
        if coder.config.sources:
            record["source"] = asdict(coder.config.sources[source])
        if folder is not None:
            record["folder"] = str(folder)
            record["weights_sha256"] = sha256_file(Path(folder) / WEIGHTS_FILE)
        steering_map = cls([site], coder.config.d_model, ids, mode, record, info)
        index = torch.tensor(ids, device=coder.W_enc.device)
        encoder, bias = single_stream_encoder(coder)
        values = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
        inverse = torch.zeros(len(ids)) if inverse_value is None else inverse_value
        inverse = torch.as_tensor(inverse, dtype=torch.float32).reshape(-1)
        if values.numel() != len(ids) or inverse.numel() != len(ids):
            raise InterpError(
                f"{values.numel()} values and {inverse.numel()} inverse values for {len(ids)} "
                "latents: expected one each"
            )
        with torch.no_grad():
            steering_map.direction.copy_(decoder_directions(coder, source)[index])
            steering_map.encoder.copy_(encoder[index])
            steering_map.encoder_bias.copy_(bias[index])
            steering_map.threshold.copy_(inference_gates(coder)[index])
            steering_map.value.copy_(values)
            steering_map.inverse_value.copy_(inverse)
        return steering_map

    def config(self) -> dict[str, Any]:
        return {"latents": self.latents, "mode": self.mode, "crosscoder": self.crosscoder}

    @classmethod
    def shapes(cls, tensors: dict[str, Tensor]) -> dict[str, Any]:
        return {"width": tensors["direction"].shape[-1]}

    def activations(self, z: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch n"]:
        """f_j(z) of the chosen latents."""
        dtype = z.dtype
        return latent_activations(
            z,
            self.encoder.to(dtype),
            self.encoder_bias.to(dtype),
            self.threshold.to(dtype),
        )

    def edit(self, site: int, strength: float, inverse: bool = False) -> Edit:
        assert site == 0, f"latent steering has one site, got site {site}"
        if self.mode == "add":
            sign = -strength if inverse else strength
            shift = sign * (self.value - self.inverse_value) @ self.direction  # [d]

            def add(z: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
                return z + shift.to(z.dtype)

            return add
        value = self.inverse_value if inverse else self.value

        def clamp(z: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
            # z + lambda sum_j (v_j - f_j(z)) d_j
            gap = value.to(z.dtype) - self.activations(z)
            return z + strength * (gap @ self.direction.to(z.dtype))

        return clamp

    @contextmanager
    def apply(
        self,
        model: nn.Module,
        strength: float = 1.0,
        inverse: bool = False,
        skip_identity_sites: bool = True,
    ) -> Iterator[nn.Module]:
        """Steer `model` at the map's site; lambda = 0 installs no hook (bit-identical)."""
        width = int(model.config.hidden_size)
        if width != self.direction.shape[-1]:
            raise InterpError(
                f"crosscoder d_model {self.direction.shape[-1]} does not match the model's "
                f"d_model {width}: apply the map to the model the crosscoder was trained on"
            )
        if strength == 0:
            yield model
            return
        with super().apply(model, strength, inverse, skip_identity_sites):
            yield model


# ---------------------------------------------------------------------------------------------
# Fitting from source/target texts
# ---------------------------------------------------------------------------------------------


def steered_source(
    coder: CrossCoder, model_spec: str, role: str | None, source: int | str | None = None
) -> int:
    """The crosscoder source read from the steered model: `source` (an index or a source name),
    else the one source recorded for `model_spec`, else the one named `role` (base/chat)."""
    sources = coder.config.sources
    if not sources:
        raise InterpError(
            "the crosscoder records no sources (model, layer): latent steering needs the layer "
            "of the steered model's source"
        )
    if isinstance(source, int):
        if not 0 <= source < len(sources):
            raise InterpError(
                f"source {source} is out of range: the crosscoder has {len(sources)} sources"
            )
        return source
    if isinstance(source, str):
        matches = [i for i, s in enumerate(sources) if s.name == source]
    else:
        matches = [i for i, s in enumerate(sources) if s.model == model_spec]
        if len(matches) != 1:
            matches = [i for i, s in enumerate(sources) if role is not None and s.name == role]
    if len(matches) == 1:
        return matches[0]
    described = [f"{i}: {s.name or '?'} = {s.model} layer {s.layer}" for i, s in enumerate(sources)]
    raise InterpError(
        f"no single crosscoder source for model {model_spec!r} (source {source!r}, role "
        f"{role!r}): expected one of {described}; pass the source index or name"
    )


def check_latents(latents: Sequence[int], dict_size: int) -> list[int]:
    ids = [int(j) for j in latents]
    for j in ids:
        if not 0 <= j < dict_size:
            raise InterpError(
                f"latent id {j} is out of range: the crosscoder has {dict_size} latents "
                f"(0..{dict_size - 1})"
            )
    return ids


def fit_latent_steering(
    model: nn.Module,
    model_spec: str,
    sites: Sequence[str],
    source: TextBatch,
    target: TextBatch,
    target_model: nn.Module,
    crosscoder: str | Path,
    n_latents: int = DEFAULT_N_LATENTS,
    latents: Sequence[int] | None = None,
    mode: str = "clamp",
    role: str | None = None,
    source_index: int | str | None = None,
    info: dict[str, Any] | None = None,
) -> LatentSteeringMap:
    """Choose latents and their values from the model's source tokens and the target model's
    target tokens at the crosscoder's layer (module doc). The crosscoder's block must be one of
    `sites`: the method's sites say where a map may act."""
    device = next(model.parameters()).device
    coder = load_crosscoder(Path(crosscoder), device=device)
    d_model = int(model.config.hidden_size)
    if coder.config.d_model != d_model:
        raise InterpError(
            f"crosscoder d_model {coder.config.d_model} does not match the model's d_model "
            f"{d_model}: use a crosscoder trained on this model"
        )
    m = steered_source(coder, model_spec, role, source_index)
    layer = coder.config.sources[m].layer
    n_layers = int(model.config.num_hidden_layers)
    if not 0 <= layer < n_layers:
        raise InterpError(
            f"crosscoder source layer {layer} does not exist in a model with {n_layers} layers"
        )
    (site,) = resolve_sites(model, "block", [layer])
    if site not in sites:
        raise InterpError(
            f"layer mismatch: the crosscoder reads layer {layer} ({site}), which is not among "
            f"the requested sites {list(sites)}: leave the layers to the crosscoder"
        )
    if n_latents < 1:
        raise InterpError(f"n_latents = {n_latents}: expected >= 1")
    encoder, bias = single_stream_encoder(coder)
    gates = inference_gates(coder)
    with torch.no_grad():
        source_f = latent_activations(
            site_activations(model, [site], source, "tokens")[:, 0], encoder, bias, gates
        )
        target_f = latent_activations(
            site_activations(target_model, [site], target, "tokens")[:, 0], encoder, bias, gates
        )
    if latents is None:
        chosen = rank_latents(source_f, target_f, min(n_latents, coder.config.dict_size)).tolist()
        rule = f"top {len(chosen)} by |mean target f_j - mean source f_j| over tokens"
    else:
        chosen, rule = check_latents(latents, coder.config.dict_size), "given"
    index = torch.tensor(chosen, device=source_f.device)
    steering_map = LatentSteeringMap.from_crosscoder(
        coder,
        m,
        site,
        chosen,
        value=target_f.mean(dim=0)[index].cpu(),
        inverse_value=source_f.mean(dim=0)[index].cpu(),
        mode=mode,
        folder=crosscoder,
        info=info,
    )
    steering_map.info.update({"method": "latents", "mode": mode, "selection": rule})
    return steering_map.to(device)
