"""Per-neuron affine maps T_s(z) = w_s * z + b_s (LinEAS's map; Linear-AcT builds on it).

Parametrised by (w - 1, b), the quantities LinEAS's sparse group lasso drives to zero, so that a
fresh map is the identity and a zeroed site is skipped when the map is applied.

Strength lambda (LinEAS): T^lambda(z) = z + lambda * (T(z) - z) = z + lambda * ((w - 1) z + b).
Inverse of T^lambda (induces the concept the map removes):
    z = (y - lambda b) / (1 + lambda (w - 1)),  which is (y - b) / w at lambda = 1.
"""

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import InterpError
from steering.steering_map import Edit, SteeringMap, register_map

MIN_INVERTIBLE_SCALE = 1e-6


@register_map("affine")
class AffineMap(SteeringMap):
    invertible = True

    def __init__(self, sites: list[str], width: int, info: dict[str, Any] | None = None) -> None:
        super().__init__(sites, info)
        self.scale_offset = nn.Parameter(torch.zeros(len(sites), width))  # w - 1
        self.bias = nn.Parameter(torch.zeros(len(sites), width))  # b

    @property
    def scale(self) -> Float[Tensor, "n_sites d"]:
        return 1 + self.scale_offset

    def edit(self, site: int, strength: float, inverse: bool = False) -> Edit:
        # T^lambda(z) = (1 + lambda (w - 1)) z + lambda b: one fused multiply-add per call
        scale = 1 + strength * self.scale_offset[site]
        shift = strength * self.bias[site]
        if inverse:
            if scale.abs().min() < MIN_INVERTIBLE_SCALE:
                raise InterpError(
                    f"the map at site {self.sites[site]!r} has a scale of ~0 at strength "
                    f"{strength}: it is not invertible there"
                )
            scale = 1 / scale
            shift = -shift * scale  # (y - lambda b) / s = y / s - lambda b / s

        def affine(z: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
            return torch.addcmul(shift.to(z.dtype), z, scale.to(z.dtype))

        return affine

    def active_sites(self) -> list[int]:
        nonzero = (self.scale_offset != 0).any(dim=1) | (self.bias != 0).any(dim=1)
        return [int(site) for site in nonzero.nonzero().flatten()]
