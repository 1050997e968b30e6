"""Sparsifying activation functions, registered by name (the `architecture` registry).

Each one decides which entries of the post-ReLU latents `f = ReLU(pre)` [batch, F] are kept,
given the summed decoder norms `s_j = sum_m ||d_j^m||` [F]; the code is f * keep. Top-k style
activations rank by `g_j = f_j * s_j` (Minder et al. 2025: a latent with small decoder norms
explains little variance however large f_j is) and decode with the *unscaled* f. A new
architecture is one more `register(Activation(...))`, with no change to the crosscoder.

| name      | training                                 | inference                          |
|-----------|------------------------------------------|------------------------------------|
| relu_l1   | f, penalised by mu * sum_j f_j s_j       | f                                  |
| topk      | top k of g per token                     | same                               |
| batchtopk | top k*B of g over the flattened batch    | keep f_j where g_j > theta         |
| jumprelu  | not trainable here (export target)       | keep f_j where f_j > threshold_j   |

`sparse_training`: the code has at most k nonzeros per token (on average), so training uses the
sparse kernels of sparse_ops.py (same math, far less work in the backward pass).
`top_k`: sparsity is a budget of k latents (topk, batchtopk): trained with the squared
reconstruction loss plus AuxK for dead latents (Gao et al.; Bussmann et al.). The other trainable
kind, relu_l1, gets sparsity from its L1 penalty and has neither (Minder et al.'s L1 crosscoder:
un-squared loss, no AuxK; crosscoder.py).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from crosscoders import ddp


class _Budget(Protocol):
    k: int


class Coder(Protocol):
    """What a selection reads from the dictionary (a `CrossCoder`): k, its thresholds, its mode.
    A protocol, so that this registry needs no import of the crosscoder that uses it."""

    training: bool

    @property
    def config(self) -> _Budget: ...

    def get_buffer(self, target: str) -> Tensor: ...


@dataclass
class Selection:
    keep: Bool[Tensor, "batch F"]  # the code is f * keep
    min_kept_g: Tensor | None = None  # batchtopk training: smallest kept g (for theta's EMA)


Select = Callable[[Float[Tensor, "batch F"], Float[Tensor, " F"], Coder], Selection]


@dataclass(frozen=True)
class Activation:
    name: str
    select: Select
    trainable: bool = True
    sparse_training: bool = False
    top_k: bool = False
    # buffers saved with the weights, created from the config: name -> factory(dict_size)
    buffers: dict[str, Callable[[int], Tensor]] = field(default_factory=dict)


ACTIVATIONS: dict[str, Activation] = {}


def register(activation: Activation) -> Activation:
    ACTIVATIONS[activation.name] = activation
    return activation


def relu_l1(f: Float[Tensor, "batch F"], s: Float[Tensor, " F"], coder: Coder) -> Selection:
    return Selection(f > 0)


def topk(f: Float[Tensor, "batch F"], s: Float[Tensor, " F"], coder: Coder) -> Selection:
    g = f * s  # [batch F]
    top = g.topk(coder.config.k, dim=-1)
    return Selection(torch.zeros_like(f, dtype=torch.bool).scatter_(-1, top.indices, True))


def batch_topk_cutoff(g: Float[Tensor, "batch F"], k: int) -> Tensor:
    """The (k * B_global)-th largest g of the global batch (all DDP ranks together).

    Each rank sends only its own top k*B_global values; the global cutoff is the k*B_global-th
    largest of their union, so every rank keeps exactly the entries a single process would keep
    on the concatenated batch (up to exact ties at the cutoff)."""
    n_keep = k * g.shape[0] * ddp.world_size()
    local_top = g.flatten().topk(min(n_keep, g.numel()), sorted=False).values
    return ddp.all_gather_cat(local_top).topk(n_keep, sorted=False).values.min()


def batch_topk(f: Float[Tensor, "batch F"], s: Float[Tensor, " F"], coder: Coder) -> Selection:
    g = f * s  # [batch F]; Minder et al.: rank by f_j * sum_m ||d_j^m||
    theta = coder.get_buffer("threshold")
    if coder.training or theta < 0:
        # Training (or a coder whose theta was never learned): top k*B over the flattened batch.
        cutoff = batch_topk_cutoff(g.detach(), coder.config.k)
        if cutoff > 0:
            return Selection(g >= cutoff, min_kept_g=cutoff)
        # Fewer than k*B positive g in the global batch: keep every positive one (never g = 0),
        # and give theta's EMA the smallest kept g, which is positive: the reference takes the
        # min over the positive kept values (crosscoder_learning @b2363ed, trainers/crosscoder.py,
        # BatchTopKCrossCoderTrainer.update_threshold l.502-507), never a cutoff <= 0.
        return Selection(g > 0, min_kept_g=smallest_positive(g.detach()))
    return Selection(g > theta)  # inference: per token, independent of the batch


def smallest_positive(g: Float[Tensor, "batch F"]) -> Tensor | None:
    """min of the positive entries of g over the global batch (all ranks); None if there is none."""
    positive = g[g > 0]
    local = positive.min() if positive.numel() else torch.tensor(torch.inf, device=g.device)
    smallest = -ddp.all_reduce_max(-local)
    return smallest if torch.isfinite(smallest) else None


def jump_relu(f: Float[Tensor, "batch F"], s: Float[Tensor, " F"], coder: Coder) -> Selection:
    return Selection(f > coder.get_buffer("jumprelu_threshold"))


register(Activation("relu_l1", relu_l1))
register(Activation("topk", topk, sparse_training=True, top_k=True))
register(
    Activation(
        "batchtopk",
        batch_topk,
        sparse_training=True,
        top_k=True,
        buffers={"threshold": lambda dict_size: torch.tensor(-1.0)},  # theta < 0: not learned yet
    )
)
register(
    Activation(
        "jumprelu",
        jump_relu,
        trainable=False,
        buffers={"jumprelu_threshold": lambda dict_size: torch.zeros(dict_size)},
    )
)
