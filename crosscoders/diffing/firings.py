"""A batch of sparse codes as its non-zero entries, and per-group top-k over such entries.

Every per-latent statistic of the cache passes only involves the tokens where a latent fires, a
few dozen of F per token for a top-k dictionary, so the passes work on these entries instead of
dense [batch, F] tensors (for Latent Scaling: L0 * d multiply-adds per token instead of F * d).
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass
class Firings:
    """The entries f[rows, latents] = values > 0 of a [batch, F] code, in row-major order."""

    rows: Int[Tensor, " n"]
    latents: Int[Tensor, " n"]
    values: Float[Tensor, " n"]
    batch_size: int
    dict_size: int

    @classmethod
    def of(cls, f: Float[Tensor, "batch F"]) -> "Firings":
        rows, latents = (f > 0).nonzero(as_tuple=True)
        return cls(rows, latents, f[rows, latents], f.shape[0], f.shape[1])

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def top_per_group(
    groups: Int[Tensor, " n"], keys: Float[Tensor, " n"], k: int
) -> tuple[Int[Tensor, " m"], Int[Tensor, " m"]]:
    """The entries with the k largest keys of each group: (their positions, their rank in the
    group, 0 = largest). Ties keep the earlier entry first."""
    by_key = torch.argsort(keys, descending=True, stable=True)
    order = by_key[torch.argsort(groups[by_key], stable=True)]
    sorted_groups = groups[order]
    position = torch.arange(order.shape[0], device=keys.device)
    opens_group = torch.ones_like(sorted_groups, dtype=torch.bool)
    opens_group[1:] = sorted_groups[1:] != sorted_groups[:-1]
    group_start = torch.cummax(torch.where(opens_group, position, 0), dim=0).values
    rank = position - group_start
    keep = rank < k
    return order[keep], rank[keep]
