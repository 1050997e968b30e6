"""Logit arithmetic on a base/chat pair: emulated fine-tuning (Mitchell et al. 2023, arXiv
2310.12962), proxy-tuning (Liu et al. 2024, arXiv 2401.08565) and model-diff amplification.

Both papers sample from softmax(logits_base_large + (logits_ft_small - logits_base_small)); with
one pair (the large and the small model the same) and a scale alpha on the difference:

    logits_alpha = logits_base + alpha (logits_chat - logits_base)
                 = (1 - alpha) logits_base + alpha logits_chat         (computed in this form)

alpha = 1 is the chat model, alpha = 0 the base model, alpha > 1 amplifies what fine-tuning
changed, 0 < alpha < 1 interpolates. The second form makes both ends exact in floating point
(1 * x + 0 * y == x), so greedy generation at alpha = 1 is token for token chat's and at
alpha = 0 base's.

`mixed_logits(steered, companion, weight)` installs one forward hook on the steered model (the
whole causal LM, so that every head transformation such as Gemma's final soft-capping is inside
both logits): each forward pass, `generate` included, also runs the companion model on the same
arguments and returns (1 - weight) logits_steered + weight logits_companion. The companion gets
its own KV cache (interp.tuco's cache swap, as TuCo's base blocks do), so `generate` gives the
same tokens with and without the cache. Only `logits` are combined; loss and hidden states
stay the steered model's.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import InterpError
from interp.models import ModelPair
from interp.tuco import _SeparateCache


def amplified_logits(
    base_logits: Float[Tensor, "*batch vocab"],
    chat_logits: Float[Tensor, "*batch vocab"],
    alpha: float,
) -> Float[Tensor, "*batch vocab"]:
    """logits_base + alpha (logits_chat - logits_base), in the form exact at alpha = 0 and 1."""
    return (1.0 - alpha) * base_logits + alpha * chat_logits


@contextmanager
def mixed_logits(steered: nn.Module, companion: nn.Module, weight: float) -> Iterator[None]:
    """While active, `steered`'s logits are (1 - weight) own + weight companion's on the same
    input (module doc)."""
    if steered is companion:
        raise InterpError(
            "the steered and the companion model are the same object: the hook would call "
            "itself; load the model twice for an identical pair"
        )
    caches = _SeparateCache(companion.config)

    def hook(_module: nn.Module, args: tuple, kwargs: dict, output):
        companion_logits = companion(*args, **caches.swap(kwargs)).logits
        output.logits = amplified_logits(output.logits, companion_logits, weight)
        return output

    handle = steered.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def logit_amplified(pair: ModelPair, alpha: float) -> Iterator[None]:
    """While active, `pair.chat.model` (forward and `generate`) outputs
    logits_base + alpha (logits_chat - logits_base)."""
    with mixed_logits(pair.chat.model, pair.base.model, 1.0 - alpha):
        yield
