"""What a latent's decoder vectors say without any data: the tokens each model's unembedding
reads from them (logit lens of the direction), and the nearest latents by decoder cosine."""

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor, nn

from crosscoders.diffing.pair_dictionary import PairDictionary

CHUNK = 256


def logit_latent_order(table: pd.DataFrame) -> np.ndarray:
    """Latents by browsing priority: non-shared classes first, then by firing frequency."""
    shared = (table["latent_class"] == "shared").to_numpy()
    freq = np.nan_to_num(table["freq"].to_numpy(), nan=0.0)
    return np.lexsort((-freq, shared))


@torch.no_grad()
def direction_logits(
    model: nn.Module, directions: Float[Tensor, "n d"]
) -> Float[Tensor, "n vocab"]:
    """Unembedding of residual directions through the model's final norm: the logits a residual
    pointing along each direction would produce (up to the positive scale the norm removes)."""
    norm = model.get_decoder().norm
    head = model.get_output_embeddings()
    weight = next(head.parameters())
    return head(norm(directions.to(weight.dtype)[None]))[0].float()


@torch.no_grad()
def decoder_logits(
    dictionary: PairDictionary,
    models: dict[str, nn.Module],
    latents: np.ndarray,
    tokenizer,
    n_tokens: int,
) -> pd.DataFrame:
    """decoder_logits.parquet: per (latent, model) the top and bottom tokens of d_j^m."""
    W_dec = dictionary.W_dec_raw
    rows = []
    for model_index, (name, model) in enumerate(models.items()):
        for start in range(0, len(latents), CHUNK):
            chunk = latents[start : start + CHUNK]
            logits = direction_logits(model, W_dec[model_index, torch.from_numpy(chunk)]).cpu()
            top = logits.topk(n_tokens, dim=-1)
            bottom = (-logits).topk(n_tokens, dim=-1)
            for row, latent in enumerate(chunk.tolist()):
                rows.append(
                    {
                        "latent": latent,
                        "model": name,
                        "top_tokens": [tokenizer.decode([i]) for i in top.indices[row].tolist()],
                        "top_values": top.values[row].numpy(),
                        "bottom_tokens": [
                            tokenizer.decode([i]) for i in bottom.indices[row].tolist()
                        ],
                        "bottom_values": (-bottom.values[row]).numpy(),
                    }
                )
    return pd.DataFrame(rows)


@torch.no_grad()
def nearest_latents(dictionary: PairDictionary, n_neighbors: int) -> pd.DataFrame:
    """neighbors.parquet: the nearest latents by cosine of the joint decoder [d^base; d^chat]
    (coder units), the latent itself excluded."""
    W_dec = dictionary.coder.W_dec.detach()[dictionary.order].float()
    device = W_dec.device
    joint = torch.cat([W_dec[0], W_dec[1]], dim=-1)  # [F 2d]
    unit = joint / joint.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dict_size = unit.shape[0]
    k = min(n_neighbors, dict_size - 1)
    latents, neighbors, cosines = [], [], []
    for start in range(0, dict_size, CHUNK):
        stop = min(start + CHUNK, dict_size)
        similarity = unit[start:stop] @ unit.T  # [chunk F]
        rows = torch.arange(stop - start, device=device)
        similarity[rows, rows + start] = -torch.inf
        top = similarity.topk(k, dim=-1)
        latents.append(torch.arange(start, stop).repeat_interleave(k))
        neighbors.append(top.indices.flatten().cpu())
        cosines.append(top.values.flatten().cpu())
    return pd.DataFrame(
        {
            "latent": torch.cat(latents).numpy(),
            "neighbor": torch.cat(neighbors).numpy(),
            "cosine": torch.cat(cosines).numpy(),
        }
    )
