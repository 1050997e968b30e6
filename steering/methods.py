"""The registry of steering methods: how each one is fitted from the same inputs, and its
default sites and strengths. TuCo alpha-scaling and crosscoder latent steering register here
when they land, with a `SteeringMap` type of their own (steering_map.register_map).
"""

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import InterpError
from steering.activations import TextBatch
from steering.linear_act import fit_linear_act
from steering.lineas import LinEASConfig, TrainingLog, train_lineas
from steering.mean_difference import fit_mean_difference
from steering.steering_map import SteeringMap


@dataclass
class SteeringProblem:
    """Move the model's site samples on `source` texts onto `targets` (precomputed samples)."""

    model: nn.Module
    sites: list[str]
    source: TextBatch
    targets: Float[Tensor, "n_target n_sites d"]
    pooling: str = "mean"
    info: dict[str, Any] | None = None


Fit = Callable[[SteeringProblem, dict[str, Any]], tuple[SteeringMap, TrainingLog | None]]


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    site_kind: str
    layers: tuple[float, ...] | None  # None: every layer
    strengths: tuple[float, ...]  # default sweep of the evaluation
    fit: Fit


def _options(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise InterpError(
            f"method {name!r} takes no option(s) {sorted(unknown)}: expected {sorted(allowed)}"
        )


def _fit_lineas(problem: SteeringProblem, options: dict[str, Any]):
    _options("lineas", options, {f.name for f in fields(LinEASConfig)} - {"pooling"})
    config = LinEASConfig(pooling=problem.pooling, **options)
    return train_lineas(
        problem.model, problem.sites, problem.source, problem.targets, config, problem.info
    )


def _fit_mean_difference(problem: SteeringProblem, options: dict[str, Any]):
    _options("mean-diff", options, set())
    steering_map = fit_mean_difference(
        problem.model, problem.sites, problem.source, problem.targets, problem.pooling, problem.info
    )
    return steering_map, None


def _fit_linear_act(problem: SteeringProblem, options: dict[str, Any]):
    _options("linear-act", options, set())
    steering_map = fit_linear_act(
        problem.model, problem.sites, problem.source, problem.targets, problem.pooling, problem.info
    )
    return steering_map, None


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "lineas",
            "LinEAS: end-to-end per-neuron affine maps, W2 loss, sparse group lasso",
            "post-norm",
            None,
            (0.0, 0.25, 0.5, 0.75, 1.0),
            _fit_lineas,
        ),
        Method(
            "mean-diff",
            "CAA/ActAdd: add mean(target) - mean(source) at the middle block, times a multiplier",
            "block",
            (0.5,),
            (0.0, 0.5, 1.0, 2.0, 4.0),
            _fit_mean_difference,
        ),
        Method(
            "linear-act",
            "Linear-AcT: closed-form per-neuron affine transport, layer by layer, in source range",
            "post-norm",
            None,
            (0.0, 0.25, 0.5, 0.75, 1.0),
            _fit_linear_act,
        ),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InterpError(f"unknown steering method {name!r}: expected one of {sorted(METHODS)}")
    return METHODS[name]
