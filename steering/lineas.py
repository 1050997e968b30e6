"""LinEAS training (Rodriguez et al. 2025): per-neuron affine maps at every site, learned jointly
and end to end.

Each step runs the source texts through the model *with the map applied* (so a site sees the
effect of every earlier site's map), pools the steered site outputs into samples and minimises
    C = sum_sites sum_neurons W2^2(steered source, target)          (steering/wasserstein.py)
against target samples precomputed from the unsteered model (or another model) on the target
texts. Optimiser: Adam with cosine decay of the learning rate to 0 (reference code: lr 1e-3,
betas (0.9, 0.9), 1000 steps). After each Adam step a proximal step of the sparse group lasso
    gamma * (lambda_1 ||theta||_1 + lambda_G sum_sites ||theta_site||_2),  theta = (w - 1, b),
with step size the current learning rate, selects neurons (soft-threshold) and whole sites
(group shrink); lambda_1 = lambda_G = 1 and gamma in [0, 0.1] as in the paper.
"""

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm import tqdm

from interp.errors import InterpError
from steering.activations import POOLINGS, TextBatch, site_activations
from steering.affine_map import AffineMap
from steering.wasserstein import distributional_loss


@dataclass
class LinEASConfig:
    steps: int = 1000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.9)
    sparsity: float = 0.0  # gamma
    l1_weight: float = 1.0  # lambda_1: neuron selection
    group_weight: float = 1.0  # lambda_G: site selection
    pooling: str = "mean"
    batch_size: int | None = None  # source texts per step; None: all of them
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0:
            raise InterpError(f"LinEAS needs steps >= 1 and lr > 0, got {self.steps}, {self.lr}")
        if self.sparsity < 0:
            raise InterpError(f"LinEAS sparsity gamma must be >= 0, got {self.sparsity}")
        if self.pooling not in POOLINGS:
            raise InterpError(f"unknown pooling {self.pooling!r}: expected one of {POOLINGS}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))


@dataclass
class TrainingLog:
    steps: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def proximal_sparse_group_lasso(
    scale_offset: Float[Tensor, "n_sites d"],
    bias: Float[Tensor, "n_sites d"],
    l1_threshold: float,
    group_threshold: float,
) -> None:
    """In place: prox of t (lambda_1 ||theta||_1 + lambda_G sum_g ||theta_g||_2) on
    theta = (w - 1, b), groups = sites. Soft-threshold each entry by `l1_threshold`, then shrink
    each site's vector by `group_threshold` in L2 norm (zero if its norm is below it)."""
    theta = torch.cat([scale_offset, bias], dim=1)  # [n_sites, 2d]: one group per site
    theta = theta.sign() * (theta.abs() - l1_threshold).clamp(min=0)
    norms = theta.norm(dim=1, keepdim=True)
    shrink = (1 - group_threshold / norms.clamp(min=torch.finfo(theta.dtype).tiny)).clamp(min=0)
    theta = theta * shrink
    width = scale_offset.shape[1]
    scale_offset.copy_(theta[:, :width])
    bias.copy_(theta[:, width:])


def target_samples(
    model: nn.Module, sites: list[str], batch: TextBatch, pooling: str
) -> Float[Tensor, "n_target n_sites d"]:
    """The unsteered model's site samples on the target texts (computed once)."""
    with torch.no_grad():
        return site_activations(model, sites, batch, pooling)


def steered_loss(
    model: nn.Module,
    steering_map: AffineMap,
    batch: TextBatch,
    targets: Float[Tensor, "n_target n_sites d"],
    pooling: str,
) -> Float[Tensor, ""]:
    """C for the source texts of `batch` steered by the map at strength 1."""
    with steering_map.apply(model, strength=1.0, skip_identity_sites=False):
        steered = site_activations(model, steering_map.sites, batch, pooling, batch_size=len(batch))
    return distributional_loss(steered, targets)


def train_lineas(
    model: nn.Module,
    sites: list[str],
    source: TextBatch,
    targets: Float[Tensor, "n_target n_sites d"],
    config: LinEASConfig,
    info: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[AffineMap, TrainingLog]:
    """Learn a LinEAS map taking the model's source activations to the target distribution."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    steering_map = AffineMap(sites, width=targets.shape[-1], info=info).to(device)
    targets = targets.to(device)
    optimizer = torch.optim.Adam(steering_map.parameters(), lr=config.lr, betas=config.betas)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    batch_size = min(config.batch_size or len(source), len(source))
    frozen = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for parameter, _ in frozen:
        parameter.requires_grad_(False)  # gradients for the map only
    log = TrainingLog()
    try:
        for step in tqdm(range(config.steps), desc="LinEAS", disable=not progress):
            rows = torch.randperm(len(source), generator=generator)[:batch_size]
            loss = steered_loss(model, steering_map, source[rows], targets, config.pooling)
            if not math.isfinite(loss.item()):
                raise InterpError(f"LinEAS loss became {loss.item()} at step {step}: lower the lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step_size = schedule.get_last_lr()[0]
            with torch.no_grad():
                proximal_sparse_group_lasso(
                    steering_map.scale_offset,
                    steering_map.bias,
                    step_size * config.sparsity * config.l1_weight,
                    step_size * config.sparsity * config.group_weight,
                )
            schedule.step()
            log.steps.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    "lr": step_size,
                    "active_sites": len(steering_map.active_sites()),
                    "active_neurons": int(_active_neurons(steering_map)),
                }
            )
    finally:
        for parameter, requires_grad in frozen:
            parameter.requires_grad_(requires_grad)
    log.seconds = time.perf_counter() - started
    steering_map.info.update({"method": "lineas", "lineas": asdict(config)})
    return steering_map, log


def _active_neurons(steering_map: AffineMap) -> Tensor:
    return ((steering_map.scale_offset != 0) | (steering_map.bias != 0)).sum()
