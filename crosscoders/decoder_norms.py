"""Relative decoder norms of a base/chat crosscoder (Minder et al. 2025) and the latent classes
they define. Convention of this project: Delta = 1 means chat-only (the reference code stores
1 - Delta)."""

import torch
from jaxtyping import Float
from torch import Tensor

from crosscoders.crosscoder import CrossCoder
from interp.errors import InterpError

# Minder et al.: chat-only 0.9-1, base-only 0-0.1, shared 0.4-0.6; anything else is "other".
CLASS_RANGES: dict[str, tuple[float, float]] = {
    "base_only": (0.0, 0.1),
    "shared": (0.4, 0.6),
    "chat_only": (0.9, 1.0),
}


def relative_decoder_norm(
    base_norms: Float[Tensor, " F"], chat_norms: Float[Tensor, " F"]
) -> Float[Tensor, " F"]:
    """Delta_j = 0.5 * (1 + (||d_j^chat|| - ||d_j^base||) / max(||d_j^chat||, ||d_j^base||)).
    A latent with both norms 0 gets 0.5 (no evidence either way)."""
    largest = torch.maximum(base_norms, chat_norms)
    ratio = (chat_norms - base_norms) / largest.clamp_min(torch.finfo(largest.dtype).tiny)
    return 0.5 * (1.0 + ratio)


def coder_relative_decoder_norm(
    coder: CrossCoder, base: int | None = None, chat: int | None = None
) -> Float[Tensor, " F"]:
    """Delta of a crosscoder; the sources default to those named "base" and "chat" in the config,
    else 0 and 1."""
    names = [source.name for source in coder.config.sources]
    if base is None:
        base = names.index("base") if "base" in names else 0
    if chat is None:
        chat = names.index("chat") if "chat" in names else 1
    if coder.config.n_sources < 2 or max(base, chat) >= coder.config.n_sources:
        raise InterpError(
            f"relative decoder norm needs sources base={base} and chat={chat}, but the "
            f"dictionary has n_sources = {coder.config.n_sources}"
        )
    # In the coder's scaled units, where each source has mean norm sqrt(d) (as in the paper).
    norms = coder.decoder_norms().detach()
    return relative_decoder_norm(norms[base], norms[chat])


def latent_classes(delta: Float[Tensor, " F"]) -> list[str]:
    """The class of each latent by the ranges of `CLASS_RANGES` ("other" outside them)."""
    labels = []
    for value in delta.tolist():
        label = "other"
        for name, (low, high) in CLASS_RANGES.items():
            if low <= value <= high:
                label = name
        labels.append(label)
    return labels
