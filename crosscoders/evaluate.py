"""Evaluation of a trained dictionary: reconstruction metrics on held-out activations and
splice-in language-model loss.

- FVE_m = 1 - sum_d var(x_m - x^_m) / sum_d var(x_m) over all evaluated tokens, per source
  (`fve`), and the same over the typical tokens (`fve_typical`): massive-norm tokens excluded, those
  whose norm in any source exceeds `massive_ratio` (5) x that source's median token norm
  (`crosscoders.losses.massive_token_mask`). Gemma 3 270M has a few such tokens in 10k at ~10x
  the median norm (the next largest is ~1.6x); a dictionary reconstructs them far off, and one
  can drive `fve` far below 0 (the demo: 1 token in 584, norm 9.7x the median, carries 99% of
  the squared error; fve -9.3, fve_typical 0.77, ce_loss_recovered 0.91). `n_massive_tokens`,
  `massive_fraction` and `massive_error_share` (their share of sum ||x - x^||^2) say how much
  they weigh;
  L0 = mean number of nonzero latents per token (inference rule: theta for BatchTopK);
  dead fraction = latents that never fire on the evaluated tokens; dense fraction = latents that
  fire on more than `dense_threshold` of them.
- Splice-in: model m's residual `resid_post[layer_m]` is replaced by the reconstruction x^_m
  (forward hook on the block output) and the rest of the model runs as usual:
  CE_spliced, KL(P_clean || P_spliced), and
  ce_loss_recovered = (CE_zero_ablation - CE_spliced) / (CE_zero_ablation - CE_clean),
  where zero ablation writes 0 instead of x^_m. Tokens the activation cache excludes (BOS,
  padding: `interp.cache.token_stream.excluded_token_ids`) are never replaced, since the
  dictionary was not trained on them.
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from crosscoders.crosscoder import CrossCoder
from crosscoders.losses import massive_norm_thresholds, massive_token_mask
from interp.cache import ActivationCache
from interp.cache.token_stream import excluded_token_ids
from interp.divergence import kl_from_log_probs
from interp.errors import InterpError
from interp.hooks import residual_edit, residual_stream
from interp.models import LoadedModel


def source_names(coder: CrossCoder) -> list[str]:
    sources = coder.config.sources
    return [s.name or str(m) for m, s in enumerate(sources)] or [
        str(m) for m in range(coder.config.n_sources)
    ]


class CacheBatches:
    """Re-iterable batches of raw activations of one split of a cache: the first `n_batches`
    batches of `split` in the reader's fixed order (seed 0), cache sources `columns` only."""

    def __init__(
        self,
        cache: ActivationCache,
        columns: Sequence[int],
        batch_size: int,
        n_batches: int,
        split: str = "validation",
    ) -> None:
        self.cache, self.columns, self.split = cache, list(columns), split
        self.batch_size, self.n_batches = batch_size, n_batches

    def __iter__(self) -> Iterator[Float[Tensor, "batch n_sources d"]]:
        batches = self.cache.iterate_batches(self.batch_size, split=self.split, normalize=False)
        return (x[:, self.columns] for x in islice(batches, self.n_batches))


class _Sums:
    """Running sums over tokens of x, x^2, e, e^2 per source and dimension (float64)."""

    def __init__(self, n_sources: int, d: int) -> None:
        self.n_tokens = 0
        self.x, self.x2, self.e, self.e2 = (
            torch.zeros(n_sources, d, dtype=torch.float64) for _ in range(4)
        )

    def add(self, x: Float[Tensor, "n n_sources d"], error: Float[Tensor, "n n_sources d"]) -> None:
        self.n_tokens += x.shape[0]
        self.x += x.sum(0)
        self.x2 += x.pow(2).sum(0)
        self.e += error.sum(0)
        self.e2 += error.pow(2).sum(0)

    def fve(self) -> Float[Tensor, " n_sources"]:
        """1 - sum_d var(e) / sum_d var(x); NaN without tokens."""
        n = self.n_tokens
        var_x = (self.x2 / n - (self.x / n).pow(2)).sum(-1)
        var_e = (self.e2 / n - (self.e / n).pow(2)).sum(-1)
        return 1.0 - var_e / var_x


@torch.no_grad()
def reconstruction_metrics(
    coder: CrossCoder,
    batches: Iterable[Float[Tensor, "batch n_sources d"]],
    dense_threshold: float = 0.1,
    massive_ratio: float = 5.0,
) -> dict[str, object]:
    """Streaming FVE per source (all tokens and typical tokens), L0, dead and dense fractions.

    With `massive_ratio` > 0 the batches are read twice: first their token norms, for each
    source's median, then the metrics. A one-shot iterator is held in memory for that; pass a
    re-iterable (a list, `CacheBatches`) to stream."""
    if massive_ratio != 0 and massive_ratio < 1:
        raise InterpError(
            f"bad massive ratio {massive_ratio}: expected 0 (off) or a multiple >= 1 of the median"
        )
    coder.eval()
    device = coder.W_enc.device
    S, d, F = coder.config.n_sources, coder.config.d_model, coder.config.dict_size
    thresholds = torch.full((S,), float("inf"))
    if massive_ratio > 0:
        if isinstance(batches, Iterator):
            batches = list(batches)
        norms = torch.cat([b.to(device, torch.float32).norm(dim=-1).cpu() for b in batches])
        thresholds = massive_norm_thresholds(norms, massive_ratio)
    every, typical = _Sums(S, d), _Sums(S, d)
    fire_counts = torch.zeros(F, dtype=torch.float64)
    l0_total = 0.0
    for batch in batches:
        x = batch.to(device, torch.float32)
        massive = massive_token_mask(x.norm(dim=-1).cpu(), thresholds)  # [batch]
        f = coder.encode(x)
        error = (x - coder.decode(f)).double().cpu()
        x64 = x.double().cpu()
        every.add(x64, error)
        typical.add(x64[~massive], error[~massive])
        firing = (f > 0).cpu()
        fire_counts += firing.sum(0)
        l0_total += float(firing.sum())
    n_tokens = every.n_tokens
    n_massive = n_tokens - typical.n_tokens
    names = source_names(coder)
    # share of the squared error sum_n ||x_m - x^_m||^2 (uncentred) that the massive tokens carry
    total_error = every.e2.sum(-1)
    massive_error = total_error - typical.e2.sum(-1)
    error_share = torch.where(total_error > 0, massive_error / total_error, 0.0)
    frequency = fire_counts / max(n_tokens, 1)
    return {
        "n_tokens": n_tokens,
        "fve": dict(zip(names, every.fve().tolist(), strict=True)),
        "fve_typical": dict(zip(names, typical.fve().tolist(), strict=True)),
        "n_massive_tokens": n_massive,
        "massive_fraction": n_massive / max(n_tokens, 1),
        "massive_error_share": dict(zip(names, error_share.tolist(), strict=True)),
        "massive_ratio": massive_ratio,
        "l0": l0_total / max(n_tokens, 1),
        "dead_fraction": float((frequency == 0).double().mean()),
        "dense_fraction": float((frequency > dense_threshold).double().mean()),
    }


@contextmanager
def replaced_residual(
    model: nn.Module, layer: int, where: Bool[Tensor, "batch seq"], values: Tensor
) -> Iterator[None]:
    """While active, block `layer`'s output at positions `where` is `values` [n_where, d]."""

    def replace(hidden: Tensor) -> Tensor:
        hidden = hidden.clone()
        hidden[where] = values.to(hidden.dtype)
        return hidden

    with residual_edit(model, layer, replace):
        yield


def next_token_losses(
    logits: Float[Tensor, "batch seq vocab"],
    clean_logprobs: Float[Tensor, "batch seq vocab"],
    input_ids: Int[Tensor, "batch seq"],
    predicted: Bool[Tensor, "batch seq"],
) -> tuple[Tensor, Tensor]:
    """Sums over predicted positions of CE(next token) and KL(P_clean || P)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)[:, :-1]
    targets = input_ids[:, 1:]
    ce = -logprobs.gather(-1, targets[..., None])[..., 0]
    clean = clean_logprobs[:, :-1]
    kl = kl_from_log_probs(clean, logprobs)
    mask = predicted[:, 1:]
    return ce[mask].sum(), kl[mask].sum()


@torch.no_grad()
def splice_metrics(
    coder: CrossCoder,
    models: Sequence[LoadedModel],
    layers: Sequence[int],
    texts: Sequence[str],
    max_length: int = 128,
    batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """Per source m (model `models[m]` at `resid_post[layers[m]]`): CE clean / spliced / zero
    ablation, KL of the spliced model, and the fraction of CE loss recovered."""
    coder.eval()
    tokenizer = models[0].tokenizer
    device = coder.W_enc.device
    excluded = torch.tensor(excluded_token_ids(tokenizer, keep_special=False), device=device)
    names = source_names(coder)
    keys = ("ce_clean", "ce_spliced", "ce_zero", "kl")
    totals = {name: dict.fromkeys(keys, 0.0) for name in names}
    n_predicted = 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            padding_side="right",
            truncation=True,
            max_length=max_length,
        ).to(device)
        ids, attention = batch["input_ids"], batch["attention_mask"].bool()
        replace = attention & ~torch.isin(ids, excluded)  # [batch seq]
        x = torch.stack(
            [
                residual_stream(model.model, ids, [layer], batch["attention_mask"])[:, :, 0]
                for model, layer in zip(models, layers, strict=True)
            ],
            dim=2,
        )  # [batch seq S d]
        x_hat = coder(x[replace].float())  # [n_replace S d]
        n_predicted += int(attention[:, 1:].sum())
        for m, (loaded, layer) in enumerate(zip(models, layers, strict=True)):
            model, total = loaded.model, totals[names[m]]
            clean_logits = model(**batch, use_cache=False).logits
            clean_logprobs = torch.log_softmax(clean_logits.float(), dim=-1)
            ce, _ = next_token_losses(clean_logits, clean_logprobs, ids, attention)
            total["ce_clean"] += float(ce)
            with replaced_residual(model, layer, replace, x_hat[:, m]):
                ce, kl = next_token_losses(
                    model(**batch, use_cache=False).logits, clean_logprobs, ids, attention
                )
            total["ce_spliced"] += float(ce)
            total["kl"] += float(kl)
            with replaced_residual(model, layer, replace, torch.zeros_like(x_hat[:, m])):
                ce, _ = next_token_losses(
                    model(**batch, use_cache=False).logits, clean_logprobs, ids, attention
                )
            total["ce_zero"] += float(ce)
    results = {}
    for name, total in totals.items():
        mean = {key: value / max(n_predicted, 1) for key, value in total.items()}
        results[name] = {
            "ce_clean": mean["ce_clean"],
            "ce_spliced": mean["ce_spliced"],
            "ce_zero_ablation": mean["ce_zero"],
            "kl_spliced": mean["kl"],
            "ce_loss_recovered": (mean["ce_zero"] - mean["ce_spliced"])
            / (mean["ce_zero"] - mean["ce_clean"]),
            "n_predicted_tokens": n_predicted,
        }
    return results
