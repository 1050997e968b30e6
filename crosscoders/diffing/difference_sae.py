"""A difference SAE: a BatchTopK SAE (the project's trainer, n_sources = 1, the SAE conventions of
crosscoders.config) trained on h_chat - h_base of a paired cache, the diffing-toolkit's
`sae_difference` baseline (Minder et al. 2025b, arXiv 2510.13900, section on baselines).

Reading (`analyze_difference_sae`): one sequential pass over the cache encodes every token's
difference; per latent the firing frequency, the mean activation over all tokens (its share of
the difference, since every decoder row has unit norm: the ranking used for "top latents"), the
max activation and its top-activating tokens. The top latents get their decoder direction read
through the fine-tuned model's final norm and unembedding (the decoder logit lens) and their
max-activating examples with a window of context.

Results (`RUN/analysis/diff-sae/`): latents.parquet (latent, freq, mean_act, max_act),
top_latents.json ([{latent, freq, mean_act, max_act, logit_tokens, logit_values,
example_tokens, examples: [{activation, seq_id, position, index, text, token}]}]), config.json.
"""

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm import tqdm

from crosscoders.config import CrossCoderConfig, Source, TrainingConfig
from crosscoders.crosscoder import CrossCoder
from crosscoders.diffing.decoder_views import direction_logits
from crosscoders.streams import BatchStream, cache_stream
from crosscoders.trainer import Trainer
from interp.cache import ActivationCache
from interp.errors import InterpError
from interp.fileio import atomic_output, atomic_write_json


def pair_columns(cache: ActivationCache, layer: int | None = None) -> tuple[int, int]:
    """Source columns (base, chat) of one cached layer (model-major order)."""
    roles = cache.roles
    if "base" not in roles or "chat" not in roles:
        raise InterpError(f"cache {str(cache.path)!r} holds roles {roles}: expected base and chat")
    if layer is None:
        if len(cache.layers) != 1:
            raise InterpError(f"the cache holds layers {cache.layers}: pass the layer")
        layer = cache.layers[0]
    if layer not in cache.layers:
        raise InterpError(f"layer {layer} is not in the cache: expected one of {cache.layers}")
    return cache.source_column("base", layer), cache.source_column("chat", layer)


def differences(x: Float[Tensor, "batch 2 d"]) -> Float[Tensor, "batch 1 d"]:
    """[base, chat] -> the one-source input h_chat - h_base."""
    return (x[:, 1] - x[:, 0])[:, None]


def difference_stream(stream: BatchStream) -> BatchStream:
    """A stream of [base, chat] batches seen as a stream of their differences."""

    def batches(first: int) -> Iterator[Tensor]:
        for x in stream(first):
            yield differences(x)

    return batches


def cache_difference_stream(
    cache: ActivationCache, batch_size: int, seed: int = 0, layer: int | None = None
) -> BatchStream:
    """Shuffled training batches of h_chat - h_base from the cache's train split."""
    columns = list(pair_columns(cache, layer))
    return difference_stream(
        cache_stream(cache, batch_size, seed=seed, split="train", sources=columns)
    )


def train_difference_sae(
    stream: BatchStream,
    out: Path,
    d_model: int,
    dict_size: int,
    k: int,
    training: TrainingConfig,
    source: Source,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> CrossCoder:
    """BatchTopK SAE on the difference stream (resumable through the trainer's checkpoints)."""
    config = CrossCoderConfig(
        n_sources=1,
        d_model=d_model,
        dict_size=dict_size,
        activation="batchtopk",
        k=k,
        # theta's EMA starts after a third of a short run (the quick profile's crosscoder: 100 of
        # 300), after the config default of 1000 steps for long ones
        threshold_start_step=min(1000, max(1, training.n_steps // 3)),
        sources=[source],
    )
    trainer = Trainer(config, training, stream, out, device, progress=progress, overwrite=overwrite)
    return trainer.train()


def decoder_directions(coder: CrossCoder) -> Float[Tensor, "F d"]:
    """Decoder rows in raw difference units (d_j / c)."""
    return (coder.W_dec[0] / coder.input_scale[0]).detach()


@torch.no_grad()
def latent_statistics(
    coder: CrossCoder,
    batches: Sequence[Float[Tensor, "batch 1 d"]] | Iterator,
    n_top: int,
) -> dict[str, np.ndarray]:
    """Per latent: firing count, activation sum, max, and the `n_top` largest activations with the
    global stream index of their token; `batches` yields (start, x) in stream order."""
    F = coder.config.dict_size
    count = torch.zeros(F, dtype=torch.long)
    total = torch.zeros(F, dtype=torch.float64)
    top_values = torch.full((F, n_top), -torch.inf)
    top_index = torch.full((F, n_top), -1, dtype=torch.long)
    n_tokens = 0
    for start, x in batches:
        f = coder.encode(x.to(coder.W_enc.dtype)).float().cpu()  # [batch F]
        count += (f > 0).sum(0)
        total += f.double().sum(0)
        index = torch.arange(start, start + f.shape[0])
        values = torch.cat([top_values, f.T], dim=1)  # [F n_top + batch]
        indices = torch.cat([top_index, index.expand(F, -1)], dim=1)
        best = values.topk(n_top, dim=1)
        top_values, top_index = best.values, indices.gather(1, best.indices)
        n_tokens += f.shape[0]
    if n_tokens == 0:
        raise InterpError("the cache stream is empty: expected tokens to analyse")
    top_index[~torch.isfinite(top_values) | (top_values <= 0)] = -1
    return {
        "freq": (count.double() / n_tokens).numpy(),
        "mean_act": (total / n_tokens).numpy(),
        "max_act": top_values[:, 0].clamp_min(0).numpy(),
        "top_values": top_values.clamp_min(0).numpy(),
        "top_index": top_index.numpy(),
        "n_tokens": np.array(n_tokens),
    }


def rank_latents(stats: dict[str, np.ndarray]) -> np.ndarray:
    """Latents by mean activation over all tokens (largest share of the difference first), ties
    by latent id."""
    mean = np.nan_to_num(stats["mean_act"], nan=0.0)
    return np.lexsort((np.arange(len(mean)), -mean))


def _example_text(cache: ActivationCache, tokenizer, index: int, before: int, after: int) -> str:
    tokens = cache.tokens(np.array([index]))
    seq_id = int(tokens["seq_ids"][0])
    lo, hi = cache.sequence_range(seq_id)
    window = np.arange(max(lo, index - before), min(hi, index + after + 1))
    ids = cache.tokens(window)["token_ids"].tolist()
    mark = int(index - window[0])
    pieces = [tokenizer.decode([i]) for i in ids]
    pieces[mark] = f"[[{pieces[mark]}]]"
    return "".join(pieces)


def analyze_difference_sae(
    coder: CrossCoder,
    cache: ActivationCache,
    model: nn.Module,
    tokenizer,
    out: Path,
    n_latents: int = 50,
    n_examples: int = 20,
    n_logit_tokens: int = 20,
    batch_size: int = 1024,
    layer: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Write latents.parquet and top_latents.json (see the module docstring) for `coder`;
    `model` is the fine-tuned model whose unembedding reads the decoder rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(pair_columns(cache, layer))
    bar = tqdm(total=cache.n_tokens, desc="diff-sae pass", unit="tok", disable=not progress)

    def batches():
        start = 0
        for batch in cache.iterate_sequential(batch_size, split="all"):
            x = differences(batch.acts[:, columns])
            yield start, x
            start += x.shape[0]
            bar.update(x.shape[0])

    stats = latent_statistics(coder.cpu(), batches(), n_examples)
    bar.close()
    table = pd.DataFrame(
        {
            "latent": np.arange(coder.config.dict_size),
            "freq": stats["freq"],
            "mean_act": stats["mean_act"],
            "max_act": stats["max_act"],
        }
    )
    with atomic_output(out / "latents.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    order = rank_latents(stats)[:n_latents]
    directions = decoder_directions(coder)[torch.from_numpy(order.copy())]
    logits = direction_logits(model, directions).cpu()
    best = logits.topk(n_logit_tokens, dim=-1)
    rows = []
    for row, latent in enumerate(order.tolist()):
        examples = []
        for value, index in zip(
            stats["top_values"][latent], stats["top_index"][latent], strict=True
        ):
            if index < 0:
                continue
            token = cache.tokens(np.array([index]))
            examples.append(
                {
                    "activation": round(float(value), 5),
                    "index": int(index),
                    "seq_id": int(token["seq_ids"][0]),
                    "position": int(token["positions"][0]),
                    "token": tokenizer.decode([int(token["token_ids"][0])]),
                    "text": _example_text(cache, tokenizer, int(index), 8, 3),
                }
            )
        rows.append(
            {
                "latent": latent,
                "freq": float(stats["freq"][latent]),
                "mean_act": float(stats["mean_act"][latent]),
                "max_act": float(stats["max_act"][latent]),
                "logit_tokens": [tokenizer.decode([i]) for i in best.indices[row].tolist()],
                "logit_values": [round(float(v), 4) for v in best.values[row]],
                "example_tokens": [example["token"] for example in examples],
                "examples": examples,
            }
        )
    atomic_write_json(out / "top_latents.json", rows)
    atomic_write_json(
        out / "config.json",
        {
            "dictionary": coder.config.to_dict(),
            "cache_config_hash": cache.manifest.get("config_hash"),
            "models": cache.models,
            "n_tokens": int(stats["n_tokens"]),
            "n_latents": n_latents,
            "n_examples": n_examples,
            "ranking": "mean activation over all cached tokens",
        },
    )
    return rows


def read_top_latents(folder: Path) -> list[dict]:
    path = Path(folder) / "top_latents.json"
    if not path.is_file():
        raise InterpError(f"{str(path)!r} does not exist: run `interp diff-sae` first")
    return json.loads(path.read_text())
