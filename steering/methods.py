"""The registry of steering methods: how each one is fitted from the same inputs
(`SteeringProblem`), and its default sites and strengths. Every method has a `SteeringMap` type
of its own (steering_map.register_map):

| method     | map type             | fitted from                                      |
|------------|----------------------|--------------------------------------------------|
| lineas     | affine               | W2 to the target samples, end to end             |
| mean-diff  | additive             | mean target - mean source sample                 |
| linear-act | supported-affine     | per-neuron transport, layer by layer (upstream   |
|            |                      | maps installed on both sides: same model)        |
| tuco       | tuco-scaling         | nothing: the pair itself (needs both models)     |
| latents    | crosscoder-latents   | a crosscoder's latents, chosen on the token      |
|            |                      | activations (option `crosscoder`: its folder)    |
| amplification | logit-amplification | nothing: the pair's logits, base + alpha (chat - |
|            |                      | base) (needs both models)                        |

A new method is one more `Method` in `METHODS` with a fit function.
"""

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import InterpError
from interp.models import ModelPair
from steering.activations import TextBatch
from steering.latent_steering import DEFAULT_N_LATENTS, LATENT_MODES, fit_latent_steering
from steering.linear_act import fit_linear_act
from steering.lineas import LinEASConfig, TrainingLog, target_samples, train_lineas
from steering.logit_amplification import LogitAmplificationMap
from steering.mean_difference import fit_mean_difference
from steering.sites import resolve_sites
from steering.steering_map import SteeringMap
from steering.tuco_scaling import TuCoScalingMap


@dataclass
class SteeringProblem:
    """Move `model`'s site samples on the `source` texts onto `target_model`'s samples on the
    `target` texts. `pair` and `steered_role` (which of its models `model` is) serve the methods
    that need both models of the pair (TuCo)."""

    model: nn.Module
    sites: list[str]
    source: TextBatch | None
    target: TextBatch | None
    target_model: nn.Module
    pooling: str = "mean"
    info: dict[str, Any] | None = None
    model_spec: str = ""  # the steered model's spec (latent steering finds its source by it)
    pair: ModelPair | None = None
    steered_role: str | None = None  # "base" or "chat"

    def texts(self, method: str) -> tuple[TextBatch, TextBatch]:
        if self.source is None or self.target is None:
            raise InterpError(f"method {method!r} is fitted on source and target texts: give both")
        return self.source, self.target

    @cached_property
    def targets(self) -> Float[Tensor, "n_target n_sites d"]:
        """The unsteered target model's site samples on the target texts (computed once, on
        first use: TuCo and latent steering never need them)."""
        if self.target is None:
            raise InterpError("no target texts given: this method is fitted on target samples")
        return target_samples(self.target_model, self.sites, self.target, self.pooling)


Fit = Callable[[SteeringProblem, dict[str, Any]], tuple[SteeringMap, TrainingLog | None]]


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    site_kind: str
    layers: tuple[float, ...] | None  # None: every layer
    strengths: tuple[float, ...]  # default sweep of the evaluation
    fit: Fit
    needs_pair: bool = False  # the fit reads both models of the pair (SteeringProblem.pair)
    required_options: tuple[str, ...] = ()  # options without a default (checked before any work)

    def check_options(self, options: dict[str, Any]) -> None:
        missing = [name for name in self.required_options if not options.get(name)]
        if missing:
            raise InterpError(
                f"method {self.name!r} needs option(s) {missing} (interp steer: --"
                f"{missing[0].replace('_', '-')})"
            )


def _options(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise InterpError(
            f"method {name!r} takes no option(s) {sorted(unknown)}: expected {sorted(allowed)}"
        )


def _fit_lineas(problem: SteeringProblem, options: dict[str, Any]):
    _options("lineas", options, {f.name for f in fields(LinEASConfig)} - {"pooling"})
    config = LinEASConfig(pooling=problem.pooling, **options)
    source, _ = problem.texts("lineas")
    return train_lineas(problem.model, problem.sites, source, problem.targets, config, problem.info)


def _fit_mean_difference(problem: SteeringProblem, options: dict[str, Any]):
    _options("mean-diff", options, set())
    source, _ = problem.texts("mean-diff")
    steering_map = fit_mean_difference(
        problem.model, problem.sites, source, problem.targets, problem.pooling, problem.info
    )
    return steering_map, None


def _fit_linear_act(problem: SteeringProblem, options: dict[str, Any]):
    _options("linear-act", options, set())
    source, target = problem.texts("linear-act")
    # same model: the target side is recomputed with the upstream maps installed (ml-act's incr)
    targets = target if problem.target_model is problem.model else problem.targets
    steering_map = fit_linear_act(
        problem.model, problem.sites, source, targets, problem.pooling, problem.info
    )
    return steering_map, None


def _fit_tuco(problem: SteeringProblem, options: dict[str, Any]):
    _check_whole_pair("tuco", problem, options)
    return TuCoScalingMap.from_pair(problem.pair, problem.steered_role, problem.info), None


def _fit_amplification(problem: SteeringProblem, options: dict[str, Any]):
    _check_whole_pair("amplification", problem, options)
    return LogitAmplificationMap.from_pair(problem.pair, problem.steered_role, problem.info), None


def _check_whole_pair(name: str, problem: SteeringProblem, options: dict[str, Any]) -> None:
    """The methods that act with the whole other model (TuCo, amplification): no options, both
    models, every block as the sites."""
    _options(name, options, set())
    if problem.pair is None or problem.steered_role is None:
        raise InterpError(f"method {name!r} needs both models of the pair and the steered role")
    steered = getattr(problem.pair, problem.steered_role)
    assert steered.model is problem.model, "the steered role names another model than `model`"
    if problem.sites != (all_blocks := resolve_sites(problem.model, "block")):
        raise InterpError(
            f"method {name!r} acts with every block ({len(all_blocks)} sites), got sites "
            f"{problem.sites}: leave the sites and layers to the method"
        )


LATENT_OPTIONS = {"crosscoder", "n_latents", "latents", "mode", "source"}


def _fit_latents(problem: SteeringProblem, options: dict[str, Any]):
    _options("latents", options, LATENT_OPTIONS)
    get_method("latents").check_options(options)
    source, target = problem.texts("latents")
    steering_map = fit_latent_steering(
        problem.model,
        problem.model_spec,
        problem.sites,
        source,
        target,
        problem.target_model,
        options["crosscoder"],
        n_latents=options.get("n_latents") or DEFAULT_N_LATENTS,
        latents=options.get("latents") or None,
        mode=options.get("mode") or LATENT_MODES[1],
        role=problem.steered_role,
        source_index=options.get("source"),
        info=problem.info,
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
        Method(
            "tuco",
            "TuCo alpha-scaling: every block pulled towards the other model's (alpha = 1 - lambda "
            "on chat)",
            "block",
            None,
            (0.0, 0.25, 0.5, 0.75, 1.0),
            _fit_tuco,
            needs_pair=True,
        ),
        Method(
            "latents",
            "crosscoder latent steering: clamp the latents with the largest mean activation "
            "difference to their target mean (or add their decoder directions)",
            "block",
            None,
            (0.0, 0.5, 1.0, 2.0, 4.0),
            _fit_latents,
            required_options=("crosscoder",),
        ),
        Method(
            "amplification",
            "logit amplification / emulated fine-tuning: logits pulled towards the other "
            "model's, base + alpha (chat - base) (alpha = 1 - lambda on chat, lambda on base)",
            "block",
            None,
            (0.0, 0.5, 1.0, 1.5, 2.0),
            _fit_amplification,
            needs_pair=True,
        ),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InterpError(f"unknown steering method {name!r}: expected one of {sorted(METHODS)}")
    return METHODS[name]
