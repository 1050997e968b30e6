"""Linear-AcT (Rodriguez et al. 2024, "Controlling language and diffusion models by transporting
activations"): a closed-form per-neuron affine map per site, fitted layer by layer.

Fit, per site and neuron: sort the source samples x and the target samples y (the 1-D optimal
transport plan; unequal counts are matched by quantile interpolation, steering/wasserstein.py),
then least squares on the matched pairs:
    w = cov(x, y) / var(x),   b = mean(y) - w mean(x).
A neuron whose source samples are constant gets w = 1 and b = mean(y) - mean(x).
Incremental fitting (the reference's `incr`, apple/ml-act `learn_intervention_all_incremental`:
before estimating the map of module l it recomputes the responses of module l on the whole data
set, source and target subsets alike, with the hooks of every module < l installed): a site is
fitted on samples taken with the maps of all earlier sites already applied.
- Same model for source and target (e.g. chat harmful -> chat benign): both sides are recomputed
  with the upstream maps installed, exactly as the reference does. Source and target texts run
  together in one forward pass (right padding: a row's real tokens never see the padding), and
  sites run in forward order, so each site's hook fits its map on the two sides' samples, then
  applies it to every row (target rows too, where they fall inside the source range).
- Target from another model (e.g. base -> chat, `induce-refusal`): the reference has no such
  case. The target model never carries the map (it is fitted for, and applied to, the steered
  model only), so its samples are the unsteered target model's, computed once; only the source
  side is recomputed with the upstream maps installed.

Applied only inside the source range (the reference's `q_0_100` support): where
min(x) < z < max(x) the neuron is mapped, elsewhere it passes unchanged. That mask makes the map
non-injective, so it has no inverse: fit the other direction instead.
"""

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.hooks import output_editing_hook
from steering.activations import TextBatch, concatenate, pool
from steering.affine_map import AffineMap
from steering.sites import site_modules
from steering.steering_map import Edit, register_map
from steering.wasserstein import quantile_function

MIN_SOURCE_VARIANCE = 1e-12


@register_map("supported-affine")
class SupportedAffineMap(AffineMap):
    """An affine map applied only where min < z < max of the source samples, per neuron."""

    invertible = False

    def __init__(self, sites: list[str], width: int, info: dict[str, Any] | None = None) -> None:
        super().__init__(sites, width, info)
        self.register_buffer("lower", torch.full((len(sites), width), -torch.inf))
        self.register_buffer("upper", torch.full((len(sites), width), torch.inf))

    def edit(self, site: int, strength: float, inverse: bool = False) -> Edit:
        affine = super().edit(site, strength, inverse)
        lower, upper = self.lower[site], self.upper[site]

        def supported_affine(z: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
            inside = (lower.to(z.dtype) < z) & (z < upper.to(z.dtype))
            return torch.where(inside, affine(z), z)

        return supported_affine


def transport_fit(
    source: Float[Tensor, "n_source d"], target: Float[Tensor, "n_target d"]
) -> tuple[Float[Tensor, " d"], Float[Tensor, " d"]]:
    """(w, b) of the least-squares affine fit of sorted target on sorted source, per neuron."""
    x = source.double().sort(dim=0).values
    y = target.double().sort(dim=0).values
    if y.shape[0] != x.shape[0]:
        n = x.shape[0]
        y = quantile_function(y, (torch.arange(n, dtype=x.dtype, device=x.device) + 0.5) / n)
    x_centred, y_centred = x - x.mean(dim=0), y - y.mean(dim=0)
    variance = x_centred.pow(2).sum(dim=0)
    covariance = (x_centred * y_centred).sum(dim=0)
    constant = variance < MIN_SOURCE_VARIANCE
    scale = torch.where(constant, 1.0, covariance / variance.clamp(min=MIN_SOURCE_VARIANCE))
    shift = y.mean(dim=0) - scale * x.mean(dim=0)
    return scale.float(), shift.float()


def fit_linear_act(
    model: nn.Module,
    sites: list[str],
    source: TextBatch,
    targets: Float[Tensor, "n_target n_sites d"] | TextBatch,
    pooling: str = "mean",
    info: dict[str, Any] | None = None,
) -> SupportedAffineMap:
    """Fit every site in one forward pass (see the module docstring). `targets`: the target
    model's samples (another model: fixed), or the target texts (the same model: their samples
    are recomputed with the upstream maps installed, as the source's are)."""
    device = next(model.parameters()).device
    same_model = isinstance(targets, TextBatch)
    batch = (concatenate(source, targets) if same_model else source).to(device)
    n_source = len(source)
    width = model.config.get_text_config().hidden_size if same_model else targets.shape[-1]
    steering_map = SupportedAffineMap(sites, width=width, info=info).to(device)
    modules = site_modules(model, sites)

    def fit_then_steer(site: int):
        def fit_and_steer(z: Tensor) -> Tensor:
            acts = z[:, :, None, :].float()
            samples = pool(acts[:n_source], batch.sample_mask[:n_source], pooling)[:, 0]
            if same_model:  # the target rows have passed through the upstream maps too
                wanted = pool(acts[n_source:], batch.sample_mask[n_source:], pooling)[:, 0]
            else:
                wanted = targets[:, site].to(device)
            scale, shift = transport_fit(samples, wanted)
            steering_map.scale_offset[site] = scale - 1
            steering_map.bias[site] = shift
            steering_map.lower[site] = samples.min(dim=0).values
            steering_map.upper[site] = samples.max(dim=0).values
            return steering_map.steer(site, z, 1.0)

        return output_editing_hook(fit_and_steer)

    handles = [module.register_forward_hook(fit_then_steer(i)) for i, module in enumerate(modules)]
    try:
        with torch.no_grad():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    steering_map.info.update(
        {"method": "linear-act", "pooling": pooling, "targets_recomputed": same_model}
    )
    return steering_map
