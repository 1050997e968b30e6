"""Real activations for the dictionary benchmarks: read from an activation cache, or computed
here with `interp.hooks.residual_stream` from built-in models on wiki texts. Each function returns
float32 [n_tokens, n_sources, d] and a one-line description of where the data came from."""

import torch

from crosscoders.losses import massive_norm_thresholds, massive_token_mask
from interp.cache import ActivationCache
from interp.cache.token_stream import excluded_token_ids
from interp.datasets import load_texts
from interp.errors import InterpError
from interp.hooks import residual_stream
from interp.layers import resolve_layer
from interp.models import LoadedModel, load_model


def drop_massive_activations(acts: torch.Tensor, factor: float = 5.0) -> tuple[torch.Tensor, int]:
    """`acts` [n, n_sources, d] without the tokens whose norm exceeds `factor` times the median norm
    in any source, and how many were dropped. Gemma 3's residual stream has rare tokens of ~9x the
    median norm (3 of the 30k tokens of a default-pair cache, all an apostrophe late in a context;
    the next largest is 1.6x). Two of them in a 2k held-out set carry ~8% of its variance and, as
    good as unseen in training, are reconstructed far off: held-out FVE -2 to -44 for crosscoders
    whose FVE on every other token is 0.6-0.8."""
    norms = acts.norm(dim=-1)  # [n, n_sources]
    massive = massive_token_mask(norms, massive_norm_thresholds(norms, factor))
    return acts[~massive], int(massive.sum())


def from_cache(
    path: str, n_tokens: int, sources: list[int] | None = None
) -> tuple[torch.Tensor, str]:
    cache = ActivationCache(path)
    batch = next(cache.iterate_batches(n_tokens, split="all", seed=0, normalize=False))
    columns = list(range(cache.n_sources)) if sources is None else sources
    names = [cache.source_names[c] for c in columns]
    return batch[:, columns], f"cache {path}: {names} of {cache.models}"


@torch.no_grad()
def from_models(
    models: list[LoadedModel], layers: list[int], n_tokens: int, ctx: int = 128
) -> torch.Tensor:
    """Residuals of each (model, layer) pair on the same wiki tokens (BOS and padding dropped,
    as the cache does)."""
    tokenizer = models[0].tokenizer
    excluded = torch.tensor(excluded_token_ids(tokenizer, keep_special=False))
    rows, have = [], 0
    texts = load_texts("wiki", "train")
    for start in range(0, len(texts), 8):
        batch = tokenizer(texts[start : start + 8], return_tensors="pt", padding=True,
                          padding_side="right", truncation=True, max_length=ctx)  # fmt: skip
        keep = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], excluded)
        per_source: dict[tuple[int, int], torch.Tensor] = {}
        for model in {id(m): m for m in models}.values():  # one pass per distinct model
            wanted = [layer for m, layer in zip(models, layers, strict=True) if m is model]
            resid = residual_stream(
                model.model, batch["input_ids"], wanted, batch["attention_mask"]
            )
            for index, layer in enumerate(wanted):
                per_source[(id(model), layer)] = resid[:, :, index][keep]
        sources = [per_source[(id(m), layer)] for m, layer in zip(models, layers, strict=True)]
        rows.append(torch.stack(sources, dim=1).float())
        have += rows[-1].shape[0]
        if have >= n_tokens:
            return torch.cat(rows)[:n_tokens]
    raise InterpError(f"wiki texts hold only {have} tokens: expected {n_tokens}")


def base_middle_layer(n_tokens: int) -> tuple[torch.Tensor, str]:
    """gemma-3-270m, resid_post at the middle layer."""
    model = load_model("gemma-3-270m")
    layer = resolve_layer(0.5, model.n_layers)
    acts = from_models([model], [layer], n_tokens)
    return acts, f"gemma-3-270m resid_post[{layer}] on wiki texts (computed in the benchmark)"


def pair_middle_layer(n_tokens: int) -> tuple[torch.Tensor, str]:
    """gemma-3-270m and gemma-3-270m-chat at the middle layer; if the chat built-in is not
    available (its adapter not trained yet), the base model at the middle layer and the next."""
    base = load_model("gemma-3-270m")
    layer = resolve_layer(0.5, base.n_layers)
    try:
        chat = load_model("gemma-3-270m-chat")
    except InterpError as error:
        acts = from_models([base, base], [layer, layer + 1], n_tokens)
        return acts, (
            f"gemma-3-270m resid_post[{layer}] and resid_post[{layer + 1}] on wiki texts "
            f"(chat model unavailable: {error})"
        )
    acts = from_models([base, chat], [layer, layer], n_tokens)
    return acts, f"gemma-3-270m and gemma-3-270m-chat resid_post[{layer}] on wiki texts"
