"""TuCo alpha-scaling as a steering map (Nuti, Franzmeyer, Henriques, ICML 2025).

TuCo splits each block of the fine-tuned model into a pre-training and a fine-tuning component,
both evaluated on the fine-tuned stream x_l (interp/tuco.py):

    x_{l+1} = x_l + PTC_l + alpha FTC_l,  PTC_l = f^PT(x_l, l),  FTC_l = f^FT(x_l, l) - f^PT(x_l, l)

As a map, the steered model's blocks are pulled towards the *companion* model's blocks (the
other model of the pair) run on the same input: at strength lambda every block outputs

    own_l(x) + lambda (companion_l(x) - own_l(x))                       (all blocks)

- steering the chat model (companion = base): alpha = 1 - lambda. lambda = 0 is the chat model,
  lambda = 1 removes the fine-tuning contribution (the pre-training component's forward:
  exactly the base model when embeddings and head are shared, as with the project's LoRA chat-tune).
  The inverse is alpha = 1 + lambda (amplifies what chat-tuning added).
- steering the base model (companion = chat): alpha = lambda, i.e. the base model plus lambda
  times the fine-tuning component; lambda = 1 is the chat model's blocks on the base model's
  embeddings and head. The inverse is alpha = -lambda.
So lambda in [0, 1] always moves one model towards the other, and the map has no fitted tensors:
it is fully described by the two models. On disk it records the steered and companion specs, roles
and weight fingerprints (interp.fingerprint.model_fingerprint), never weights. `apply` checks
the steered model's fingerprint, and uses the companion given by `attach` (the evaluation does
this) or loads it from its recorded spec; a model with other weights is a clear error.

Implementation: `interp.tuco.alpha_scaled` on the pair (companion as the "pre-trained" model,
steered model as the "fine-tuned" one) with alpha = 1 - lambda (inverse 1 + lambda); its hooks
give the companion blocks their own KV cache, so `generate` gives the same tokens with and
without the cache. lambda = 0 installs no hook (outputs bit-identical to the plain model).
"""

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from torch import Tensor, nn

from interp.errors import InterpError
from interp.fingerprint import model_fingerprint
from interp.hooks import decoder_layers
from interp.models import LoadedModel, ModelPair, load_model
from interp.tuco import alpha_scaled
from steering.sites import resolve_sites, site_modules
from steering.steering_map import Edit, SteeringMap, register_map

ROLES = ("base", "chat")


def block_alpha(strength: float, inverse: bool = False) -> float:
    """The alpha of `interp.tuco.alpha_scaled` on the (companion, steered) pair:
    own + lambda (companion - own) = companion + (1 - lambda)(own - companion)."""
    return 1.0 + strength if inverse else 1.0 - strength


def model_record(loaded: LoadedModel, role: str) -> dict[str, str]:
    """What identifies a model on disk: spec, role, dtype and weight fingerprint."""
    return {
        "spec": loaded.spec,
        "role": role,
        "dtype": str(next(loaded.model.parameters()).dtype),
        "fingerprint": model_fingerprint(loaded.model),
    }


@register_map("tuco-scaling")
class TuCoScalingMap(SteeringMap):
    """Every block of the steered model pulled towards the companion model's block (module doc).
    `sites` are the steered model's blocks (all of them: the paper scales every block)."""

    invertible: ClassVar[bool] = True

    def __init__(
        self,
        sites: list[str],
        steered: dict[str, str],
        companion: dict[str, str],
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(sites, info)
        if steered.get("role") not in ROLES or companion.get("role") not in ROLES:
            raise InterpError(
                f"TuCo map roles {steered.get('role')!r}/{companion.get('role')!r}: "
                f"expected one of {ROLES} each"
            )
        if steered["role"] == companion["role"]:
            raise InterpError(
                f"TuCo map steers {steered['role']!r} towards itself: the companion must be the "
                "other model of the pair"
            )
        self.steered, self.companion = dict(steered), dict(companion)
        self._companion: LoadedModel | None = None
        self._pair: ModelPair | None = None
        # models already checked against each record: one fingerprint per model and map
        self._verified: dict[str, weakref.WeakSet[nn.Module]] = {
            role: weakref.WeakSet() for role in ROLES
        }

    @classmethod
    def from_pair(
        cls, pair: ModelPair, steered_role: str, info: dict[str, Any] | None = None
    ) -> "TuCoScalingMap":
        """The map that steers `pair.<steered_role>` towards the other model, attached to it."""
        if steered_role not in ROLES:
            raise InterpError(f"steered model {steered_role!r}: expected one of {ROLES}")
        companion_role = "base" if steered_role == "chat" else "chat"
        steered: LoadedModel = getattr(pair, steered_role)
        companion: LoadedModel = getattr(pair, companion_role)
        steering_map = cls(
            resolve_sites(steered.model, "block"),
            model_record(steered, steered_role),
            model_record(companion, companion_role),
            info,
        )
        steering_map.info.update(
            {"method": "tuco", "steered_role": steered_role, "companion_role": companion_role}
        )
        steering_map._verified[steered_role].add(steered.model)
        steering_map._verified[companion_role].add(companion.model)
        steering_map._companion = companion
        return steering_map

    def config(self) -> dict[str, Any]:
        return {"steered": self.steered, "companion": self.companion}

    @classmethod
    def shapes(cls, tensors: dict[str, Tensor]) -> dict[str, Any]:
        assert not tensors, f"a TuCo map has no tensors, got {sorted(tensors)}"
        return {}

    def edit(self, site: int, strength: float, inverse: bool = False) -> Edit:
        raise InterpError(
            "a TuCo map edits each block from its input (it runs the companion block on it), "
            "not from its output alone: use `apply(model, strength)`"
        )

    def attach(self, companion: LoadedModel) -> None:
        """Use this loaded companion model (checked against the recorded fingerprint)."""
        self._check(companion.model, self.companion)
        self._companion, self._pair = companion, None

    def _check(self, model: nn.Module, record: dict[str, str]) -> None:
        """`model` must have the recorded weights (compared where the dtype is the recorded
        one: the fingerprint hashes raw values) and the recorded number of blocks."""
        verified = self._verified[record["role"]]
        if model in verified:
            return
        n_blocks = len(decoder_layers(model))
        if n_blocks != len(self.sites):
            raise InterpError(
                f"TuCo map was made for {record['spec']!r} with {len(self.sites)} blocks, "
                f"this model has {n_blocks}: apply it to the {record['role']} model it was made for"
            )
        dtype = str(next(model.parameters()).dtype)
        if dtype == record["dtype"] and model_fingerprint(model) != record["fingerprint"]:
            raise InterpError(
                f"this model's weights differ from the {record['role']} model {record['spec']!r} "
                f"the TuCo map was made with (fingerprint {record['fingerprint'][:12]}): "
                "re-create the map for this pair"
            )
        verified.add(model)

    def _companion_for(self, model: nn.Module) -> LoadedModel:
        if self._companion is None:
            parameter = next(model.parameters())
            loaded = load_model(
                self.companion["spec"], dtype=parameter.dtype, device=str(parameter.device)
            )
            self.attach(loaded)
        assert self._companion is not None
        return self._companion

    def _pair_for(self, model: nn.Module) -> ModelPair:
        """(companion, steered) as a validated pair, built once per steered model (validating
        compares the vocabularies: 0.8 s for Gemma 3)."""
        if self._pair is None or self._pair.chat.model is not model:
            self._check(model, self.steered)
            companion = self._companion_for(model)
            # The pair validation compares configs (family, d_model, n_layers); the tokenizers
            # were compared when the map was made, so the steered side borrows the companion's.
            steered = LoadedModel(self.steered["spec"], model, companion.tokenizer)
            self._pair = ModelPair(base=companion, chat=steered)
        return self._pair

    @contextmanager
    def apply(
        self,
        model: nn.Module,
        strength: float = 1.0,
        inverse: bool = False,
        skip_identity_sites: bool = True,
    ) -> Iterator[nn.Module]:
        """Pull every block of `model` (the steered model) towards the companion's block."""
        site_modules(model, self.sites)  # the architecture check every map makes
        if strength == 0:
            yield model
            return
        with alpha_scaled(self._pair_for(model), block_alpha(strength, inverse)):
            yield model
