"""Site activations of a model on texts: one sample per text (mean over its tokens, as in the
LinEAS and AcT reference code) or one sample per token.

The forward pass stops as soon as the deepest site has run (the final norm and the unembedding,
half the cost of Gemma 3 270M, are never computed). Special tokens (BOS, chat-turn markers) are
left out of the samples: their activations are outliers that would dominate the per-neuron
distributions. Gradients flow when the caller has them enabled (LinEAS training).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from interp.errors import InterpError
from interp.hooks import block_output
from steering.sites import site_modules

POOLINGS = ("mean", "last", "tokens")


@dataclass
class TextBatch:
    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    sample_mask: Bool[Tensor, "batch seq"]  # real, non-special tokens

    def to(self, device: torch.device) -> "TextBatch":
        return TextBatch(*(tensor.to(device) for tensor in vars(self).values()))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, rows: slice) -> "TextBatch":
        return TextBatch(*(tensor[rows] for tensor in vars(self).values()))


def concatenate(first: TextBatch, second: TextBatch) -> TextBatch:
    """The rows of `first` then `second`, right-padded to a common length (the padding is
    masked out and, under the causal mask, never seen by a real token)."""
    length = max(first.input_ids.shape[1], second.input_ids.shape[1])

    def padded(tensor: Tensor) -> Tensor:
        return F.pad(tensor, (0, length - tensor.shape[1]))  # pad id 0, masks False/0

    return TextBatch(
        *(
            torch.cat([padded(a), padded(b)])
            for a, b in zip(vars(first).values(), vars(second).values(), strict=True)
        )
    )


def encode_texts(tokenizer, texts: Sequence[str], max_tokens: int = 64) -> TextBatch:
    """Right-padded token ids (truncated to `max_tokens`). Texts already rendered with a chat
    template start with the BOS token and get no second one."""
    if not texts:
        raise InterpError("no texts given: expected at least one text to compute activations on")
    bos = tokenizer.bos_token
    rendered = bos is not None and all(text.startswith(bos) for text in texts)
    encoded = tokenizer(
        list(texts),
        return_tensors="pt",
        padding=True,
        padding_side="right",
        truncation=True,
        max_length=max_tokens,
        add_special_tokens=not rendered,
    )
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    sample_mask = encoded.attention_mask.bool() & ~torch.isin(encoded.input_ids, special)
    return TextBatch(encoded.input_ids, encoded.attention_mask, sample_mask)


class _SitesCaptured(Exception):
    """Raised by the last site's hook: nothing after it is needed."""


def pool(
    acts: Float[Tensor, "batch seq n_sites d"], sample_mask: Bool[Tensor, "batch seq"], pooling: str
) -> Float[Tensor, "n_samples n_sites d"]:
    """`mean`: one sample per text, the mean over its sample tokens; `last`: one sample per text,
    its last sample token (for a chat prompt, the position that starts the response); `tokens`:
    one sample per sample token."""
    if pooling == "mean":
        weights = sample_mask.to(acts.dtype)
        counts = weights.sum(dim=1).clamp(min=1)
        summed = torch.einsum("bsnd,bs->bnd", acts, weights)  # sum over each text's tokens
        return summed / counts[:, None, None]
    if pooling == "last":
        positions = torch.arange(1, sample_mask.shape[1] + 1, device=sample_mask.device)
        last = (sample_mask * positions).argmax(dim=1)  # index of each row's last sample token
        return acts[torch.arange(acts.shape[0], device=acts.device), last]
    if pooling == "tokens":
        return acts[sample_mask]
    raise InterpError(f"unknown pooling {pooling!r}: expected one of {POOLINGS}")


def site_activations(
    model: nn.Module,
    sites: Sequence[str],
    batch: TextBatch,
    pooling: str = "mean",
    batch_size: int = 32,
) -> Float[Tensor, "n_samples n_sites d"]:
    """Samples of every site's output (after any steering map applied around this call)."""
    modules = site_modules(model, sites)
    device = next(model.parameters()).device
    captured: dict[int, Tensor] = {}

    def hook_for(site: int):
        def hook(_module: nn.Module, _args: tuple, output: Tensor | tuple) -> None:
            captured[site] = block_output(output)
            if len(captured) == len(modules):
                raise _SitesCaptured

        return hook

    samples = []
    handles = [module.register_forward_hook(hook_for(i)) for i, module in enumerate(modules)]
    try:
        for start in range(0, len(batch), batch_size):
            chunk = batch[start : start + batch_size].to(device)
            captured.clear()
            try:
                model(
                    input_ids=chunk.input_ids, attention_mask=chunk.attention_mask, use_cache=False
                )
            except _SitesCaptured:
                pass
            acts = rearrange([captured[i] for i in range(len(modules))], "n b s d -> b s n d")
            samples.append(pool(acts.float(), chunk.sample_mask, pooling))
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(samples)
