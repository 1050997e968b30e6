"""Mean-difference steering (CAA / ActAdd style): add a fixed vector v_s = mean(target) -
mean(source) at each site, scaled by a multiplier.

T^lambda(z) = z + lambda v: the strength is the CAA multiplier (any real; 1 moves the source mean
onto the target mean, larger values overshoot, negative values push the other way). The inverse
subtracts the same vector. With `block` sites at one layer this is CAA; at every post-norm site
it is Mean-AcT (z - mu_source + mu_target) of the AcT reference code.
"""

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from steering.activations import TextBatch, site_activations
from steering.steering_map import Edit, SteeringMap, register_map


@register_map("additive")
class AdditiveMap(SteeringMap):
    invertible = True

    def __init__(self, sites: list[str], width: int, info: dict[str, Any] | None = None) -> None:
        super().__init__(sites, info)
        self.vector = nn.Parameter(torch.zeros(len(sites), width))

    def edit(self, site: int, strength: float, inverse: bool = False) -> Edit:
        shift = (-strength if inverse else strength) * self.vector[site]

        def add(z: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
            return z + shift.to(z.dtype)

        return add

    def active_sites(self) -> list[int]:
        return [int(site) for site in (self.vector != 0).any(dim=1).nonzero().flatten()]


def fit_mean_difference(
    model: nn.Module,
    sites: list[str],
    source: TextBatch,
    targets: Float[Tensor, "n_target n_sites d"],
    pooling: str = "mean",
    info: dict[str, Any] | None = None,
) -> AdditiveMap:
    """v_s = mean of the target samples - mean of the model's source samples, per site."""
    with torch.no_grad():
        source_samples = site_activations(model, sites, source, pooling)
    steering_map = AdditiveMap(sites, width=targets.shape[-1], info=info)
    with torch.no_grad():
        steering_map.vector.copy_(targets.mean(dim=0) - source_samples.mean(dim=0))
    steering_map.info.update({"method": "mean-diff", "pooling": pooling})
    return steering_map.to(next(model.parameters()).device)
