"""Per-neuron 1-D Wasserstein-2 distances, LinEAS's distributional loss.

For 1-D empirical measures with n samples each, optimal transport matches order statistics, so
    W2^2(u, v) = (1/n) sum_i (u_(i) - v_(i))^2        (sort along samples)
and the loss of a site with neurons j is Delta(U, V) = sum_j W2^2(U_.j, V_.j) (the LinEAS paper).

Unequal sample counts (n_u source samples, n_v target samples): W2^2 is the integral over levels
t in (0, 1) of (F_u^-1(t) - F_v^-1(t))^2. We evaluate it at the source's n_u midpoint levels
t_i = (i + 1/2) / n_u, reading the target's quantile function by linear interpolation between
its order statistics (placed at their own midpoint levels). With n_u == n_v this is exactly the
sorted matching above, and every steered source sample keeps its own gradient.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def quantile_function(
    sorted_values: Float[Tensor, " n *features"], levels: Float[Tensor, " m"]
) -> Float[Tensor, " m *features"]:
    """Empirical quantile function at `levels` in (0, 1), piecewise linear through the points
    ((j + 1/2) / n, v_(j)) and constant beyond the first and last of them."""
    n = sorted_values.shape[0]
    position = (levels * n - 0.5).clamp(0, n - 1)
    lower = position.floor().long()
    upper = (lower + 1).clamp(max=n - 1)
    fraction = (position - lower).view(-1, *([1] * (sorted_values.dim() - 1)))
    return sorted_values[lower] * (1 - fraction) + sorted_values[upper] * fraction


def per_neuron_w2(
    source: Float[Tensor, " n_source *features"], target: Float[Tensor, " n_target *features"]
) -> Float[Tensor, "*features"]:
    """W2^2 between the source and target samples of each feature (samples along dim 0)."""
    source_sorted = source.sort(dim=0).values
    target_sorted = target.sort(dim=0).values
    n_source = source.shape[0]
    if target.shape[0] != n_source:
        levels = (torch.arange(n_source, device=source.device, dtype=source.dtype) + 0.5) / n_source
        target_sorted = quantile_function(target_sorted, levels)
    return (source_sorted - target_sorted).pow(2).mean(dim=0)


def distributional_loss(
    steered: Float[Tensor, "n_source n_sites d"], target: Float[Tensor, "n_target n_sites d"]
) -> Float[Tensor, ""]:
    """LinEAS's loss C = sum_sites sum_neurons W2^2(steered source, target)."""
    return per_neuron_w2(steered, target).sum()
