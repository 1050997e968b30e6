"""Logit amplification (emulated fine-tuning, proxy-tuning) as a steering map.

The steered model's next-token logits are pulled towards the companion model's (the other model
of the pair) on the same input (interp/amplification.py): at strength lambda

    logits = own + lambda (companion - own)

- steering the chat model (companion = base): logits_base + alpha (logits_chat - logits_base)
  with alpha = 1 - lambda (lambda = 1 is the base model; the inverse, alpha = 1 + lambda,
  amplifies what fine-tuning changed: Mitchell et al. 2023, arXiv 2310.12962, eq. of the
  emulated fine-tune with one pair);
- steering the base model (companion = chat): alpha = lambda (lambda = 1 is the chat model,
  lambda = 2 amplifies twice the difference: Liu et al. 2024's proxy-tuning with one pair);
  inverse alpha = -lambda.

The same parameterisation as TuCo alpha-scaling (steering/tuco_scaling.py), one level up: TuCo
scales each block's fine-tuning component, this scales the difference of the output logits. The
map has no fitted tensors; it records the two models as a TuCo map does (specs, roles, dtypes,
weight fingerprints) and inherits its checks, `attach` and loading of the companion. Its `sites`
are the steered model's blocks, recorded for the architecture check only: the edit is on the
causal LM's output logits. lambda = 0 installs no hook.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from interp.amplification import mixed_logits
from steering.sites import site_modules
from steering.steering_map import register_map
from steering.tuco_scaling import TuCoScalingMap


def companion_weight(strength: float, inverse: bool = False) -> float:
    """The companion logits' weight: own + lambda (companion - own), or own - lambda (...)."""
    return -strength if inverse else strength


@register_map("logit-amplification")
class LogitAmplificationMap(TuCoScalingMap):
    """The steered model's logits pulled towards the companion's (module doc)."""

    @classmethod
    def from_pair(cls, pair, steered_role, info=None):  # type: ignore[override]
        steering_map = super().from_pair(pair, steered_role, info)
        steering_map.info["method"] = "amplification"
        return steering_map

    @contextmanager
    def apply(
        self,
        model: nn.Module,
        strength: float = 1.0,
        inverse: bool = False,
        skip_identity_sites: bool = True,
    ) -> Iterator[nn.Module]:
        site_modules(model, self.sites)
        if strength == 0:
            yield model
            return
        companion = self._pair_for(model).base.model  # the pair is (companion, steered)
        with mixed_logits(model, companion, companion_weight(strength, inverse)):
            yield model
