"""Synthetic base/chat activations generated from a known sparse dictionary, for checking that a
crosscoder recovers planted atoms and classifies them by relative decoder norm.

Atom a has one direction per source: shared atoms write the same unit vector into base and chat,
base-only atoms write only into base, chat-only only into chat. A token is x = sum_a c_a atom_a +
noise, where each atom fires independently with probability `firing_probability` and coefficient
U(0.5, 1.5).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

ATOM_CLASSES = ("shared", "base_only", "chat_only")


@dataclass
class PlantedDictionary:
    atoms: Float[Tensor, "n_atoms 2 d"]  # [:, 0] base direction, [:, 1] chat direction
    classes: list[str]  # one of ATOM_CLASSES per atom
    firing_probability: float
    noise: float

    @classmethod
    def random(
        cls,
        d_model: int,
        n_shared: int,
        n_base_only: int,
        n_chat_only: int,
        firing_probability: float = 0.05,
        noise: float = 0.01,
        seed: int = 0,
    ) -> "PlantedDictionary":
        generator = torch.Generator().manual_seed(seed)
        n_atoms = n_shared + n_base_only + n_chat_only
        directions = torch.randn(n_atoms, d_model, generator=generator)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        classes = ["shared"] * n_shared + ["base_only"] * n_base_only + ["chat_only"] * n_chat_only
        base_mask = torch.tensor([c != "chat_only" for c in classes], dtype=torch.float32)
        chat_mask = torch.tensor([c != "base_only" for c in classes], dtype=torch.float32)
        atoms = torch.stack(
            [directions * base_mask[:, None], directions * chat_mask[:, None]], dim=1
        )
        return cls(atoms, classes, firing_probability, noise)

    def sample(self, n_tokens: int, generator: torch.Generator) -> Float[Tensor, "n 2 d"]:
        n_atoms = self.atoms.shape[0]
        fires = torch.rand(n_tokens, n_atoms, generator=generator) < self.firing_probability
        coefficients = 0.5 + torch.rand(n_tokens, n_atoms, generator=generator)
        codes = coefficients * fires  # [n n_atoms]
        x = torch.einsum("na,asd->nsd", codes, self.atoms)
        return x + self.noise * torch.randn(x.shape, generator=generator)

    def stream(self, batch_size: int, seed: int = 0):
        """A `BatchStream`: batch i is drawn from its own seeded generator, so that a stream
        restarted at i (resume) yields exactly the batches an uninterrupted one would."""

        def batches(start: int) -> Iterator[Tensor]:
            index = start
            while True:
                generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
                yield self.sample(batch_size, generator)
                index += 1

        return batches
