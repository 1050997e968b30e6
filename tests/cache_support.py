"""Shared inputs of the activation-cache tests: documents in the tiny models' vocabulary."""

import numpy as np
from tiny_models import WORDS

from interp.cache import InMemorySource

VOCAB_WORDS = WORDS[3:]  # w0, w1, ... (skip "user", "model", "\n")


def documents(count: int, seed: int = 0, max_words: int = 50) -> list[str]:
    """Distinct random documents of 1..max_words tiny-vocabulary words."""
    rng = np.random.default_rng(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        length = int(rng.integers(1, max_words + 1))
        found[" ".join(rng.choice(VOCAB_WORDS, size=length))] = None
    return list(found)


def mixed_source(count: int = 40) -> InMemorySource:
    """`wiki` (plain documents) and `chat` (prompt/response pairs rendered with the template)."""
    plain = documents(count, seed=1)
    prompts, responses = documents(count, seed=2, max_words=12), documents(count, seed=3)
    return InMemorySource(
        plain={"wiki": plain}, chats={"chat": list(zip(prompts, responses, strict=True))}
    )
