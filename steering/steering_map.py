"""The interface every steering map implements, and the registry of map types.

A map holds per-site parameters (tensors, one row per site) and edits each site's output during
the forward pass: `with steering_map.apply(model, strength=0.5): model.generate(...)`. Plain torch
forward hooks do the editing: they run on every forward call, so `generate` with or without the
KV cache sees the same edit (each position is mapped on its own), and gradients flow into the
map's parameters for training.

On disk a map is a folder with `map.safetensors` (its tensors) and `map.json` (`type`, `sites`,
`info`: what produced it). New map types register with `@register_map("name")` and are found by
`load_map` without any if/elif chain.
"""

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from interp.errors import InterpError
from interp.fileio import atomic_output, atomic_write_json
from interp.hooks import output_editing_hook
from steering.sites import site_modules

MAP_TYPES: dict[str, type["SteeringMap"]] = {}
Edit = Callable[[Tensor], Tensor]
MAP_WEIGHTS, MAP_CONFIG = "map.safetensors", "map.json"


def register_map(name: str) -> Callable[[type["SteeringMap"]], type["SteeringMap"]]:
    """Class decorator: make a map type loadable under `name`."""

    def decorate(cls: type["SteeringMap"]) -> type["SteeringMap"]:
        assert name not in MAP_TYPES, f"map type {name!r} registered twice"
        cls.map_type = name
        MAP_TYPES[name] = cls
        return cls

    return decorate


class SteeringMap(nn.Module, ABC):
    """Per-site maps T_s applied to the outputs of the modules named in `sites`.

    `strength` lambda interpolates (or, for additive maps, scales) the edit; `inverse=True`
    applies the inverse map (inducing a concept instead of removing it) where one exists.
    """

    map_type: ClassVar[str]
    invertible: ClassVar[bool] = False

    def __init__(self, sites: list[str], info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.sites = list(sites)
        self.info: dict[str, Any] = dict(info or {})

    @abstractmethod
    def edit(self, site: int, strength: float, inverse: bool = False) -> Edit:
        """The function z -> T^lambda(z) at site `site` (an index into `sites`), or its inverse.
        Built once per `apply`, so the per-token work is the edit itself."""

    def steer(
        self, site: int, z: Float[Tensor, "*batch d"], strength: float
    ) -> Float[Tensor, "*batch d"]:
        """T^lambda(z) at site `site`."""
        return self.edit(site, strength)(z)

    def invert(
        self, site: int, z: Float[Tensor, "*batch d"], strength: float
    ) -> Float[Tensor, "*batch d"]:
        """The inverse of `steer(site, ., strength)` (maps with `invertible = True`)."""
        return self.edit(site, strength, inverse=True)(z)

    def active_sites(self) -> list[int]:
        """Sites where the map is not the identity (sparse maps skip the rest when applied)."""
        return list(range(len(self.sites)))

    @contextmanager
    def apply(
        self,
        model: nn.Module,
        strength: float = 1.0,
        inverse: bool = False,
        skip_identity_sites: bool = True,
    ) -> Iterator[nn.Module]:
        """Edit the sites' outputs of `model` inside the `with` block (forward and generate).
        Sites where the map is the identity get no hook unless `skip_identity_sites` is False
        (training: a zeroed site must still receive gradients)."""
        if inverse and not self.invertible:
            raise InterpError(
                f"{self.map_type!r} maps have no inverse: fit one in the other direction instead"
            )
        modules = site_modules(model, self.sites)

        hooked = self.active_sites() if skip_identity_sites else range(len(self.sites))
        handles = [
            modules[site].register_forward_hook(
                output_editing_hook(self.edit(site, strength, inverse))
            )
            for site in hooked
        ]
        try:
            yield model
        finally:
            for handle in handles:
                handle.remove()

    def config(self) -> dict[str, Any]:
        """Constructor arguments beyond `sites` and `info` (JSON-serialisable)."""
        return {}

    @classmethod
    def shapes(cls, tensors: dict[str, Tensor]) -> dict[str, Any]:
        """Constructor arguments read off the saved tensors. Default: `width` (the site width),
        every tensor being [n_sites, width]."""
        widths = {tensor.shape[-1] for tensor in tensors.values()}
        assert len(widths) == 1, f"map tensors disagree on width: {widths}"
        return {"width": widths.pop()}

    def save(self, folder: str | Path) -> Path:
        """Write `map.safetensors` and `map.json` into `folder`, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()
        }
        description = {
            "type": self.map_type,
            "sites": self.sites,
            "config": self.config(),
            "info": self.info,
        }
        with atomic_output(folder / MAP_WEIGHTS) as weights_tmp:
            save_file(tensors, str(weights_tmp))
        atomic_write_json(folder / MAP_CONFIG, description)
        return folder


def load_map(folder: str | Path) -> SteeringMap:
    """Read a map saved by `SteeringMap.save`, whatever its registered type."""
    folder = Path(folder)
    if not (folder / MAP_CONFIG).is_file() or not (folder / MAP_WEIGHTS).is_file():
        raise InterpError(
            f"{str(folder)!r} is not a steering map folder: expected {MAP_CONFIG} and {MAP_WEIGHTS}"
        )
    description = json.loads((folder / MAP_CONFIG).read_text())
    map_type = description.get("type")
    from steering import register_map_types

    register_map_types()
    if map_type not in MAP_TYPES:
        raise InterpError(
            f"unknown steering map type {map_type!r} in {folder}: "
            f"expected one of {sorted(MAP_TYPES)}"
        )
    tensors = load_file(str(folder / MAP_WEIGHTS))
    steering_map = MAP_TYPES[map_type](
        sites=description["sites"],
        info=description["info"],
        **description["config"],
        **MAP_TYPES[map_type].shapes(tensors),
    )
    steering_map.load_state_dict(tensors)
    return steering_map
