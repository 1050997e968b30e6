"""The per-latent table `latents.parquet`: decoder geometry (relative norm, cosine, class), firing
frequencies per data subset, max activation and the Latent Scaling columns.

Columns (docs/ARCHITECTURE.md, "Run folder"): latent, rel_norm (1 = chat-only), cosine,
latent_class ("base-only" | "chat-only" | "shared" | "other"), freq, freq_wiki, freq_chat,
freq_template, freq_other, max_act, norm_base, norm_chat, beta_r_base, beta_r_chat,
beta_eps_base, beta_eps_chat, nu_r, nu_eps, complete_shrinkage, latent_decoupling, chat_specific.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from crosscoders.decoder_norms import latent_classes, relative_decoder_norm
from crosscoders.diffing.firings import Firings
from crosscoders.diffing.latent_scaling import scaling_flags, scaling_ratios
from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.token_subsets import SUBSETS
from interp.fileio import atomic_output

LATENTS_FILE = "latents.parquet"


@dataclass
class FiringStats:
    """Running firing counts per token subset and max activation of every latent."""

    fires: Float[Tensor, "subset F"]  # tokens of each subset where f_j > 0
    tokens: Float[Tensor, " subset"]  # tokens of each subset
    max_act: Float[Tensor, " F"]

    @classmethod
    def zeros(cls, dict_size: int, device: torch.device | str = "cpu") -> "FiringStats":
        return cls(
            fires=torch.zeros(len(SUBSETS), dict_size, dtype=torch.float64, device=device),
            tokens=torch.zeros(len(SUBSETS), dtype=torch.float64, device=device),
            max_act=torch.zeros(dict_size, device=device),
        )

    def cpu(self) -> "FiringStats":
        return FiringStats(self.fires.cpu(), self.tokens.cpu(), self.max_act.cpu())

    @torch.no_grad()
    def update(self, codes: Firings, subsets: Bool[Tensor, "batch subset"]) -> None:
        in_subset = subsets[codes.rows]  # [n subset]: the subsets of each firing's token
        for index in range(subsets.shape[1]):
            latents = codes.latents[in_subset[:, index]]
            self.fires[index] += torch.bincount(latents, minlength=codes.dict_size).double()
        self.tokens += subsets.sum(0).double()
        self.max_act.scatter_reduce_(0, codes.latents, codes.values, reduce="amax")

    def frequencies(self) -> dict[str, Tensor]:
        """Firing frequency per subset (NaN for an empty subset) and overall; the overall count is
        the wiki + chat count, which partition the stream."""
        out = {}
        for index, name in enumerate(SUBSETS):
            n = self.tokens[index]
            out[f"freq_{name}"] = (
                self.fires[index] / n if n > 0 else torch.full_like(self.fires[index], torch.nan)
            )
        all_fires = self.fires[SUBSETS.index("wiki")] + self.fires[SUBSETS.index("chat")]
        all_tokens = self.tokens[SUBSETS.index("wiki")] + self.tokens[SUBSETS.index("chat")]
        out["freq"] = all_fires / all_tokens.clamp_min(1)
        return out


def decoder_cosine(W_dec: Float[Tensor, "2 F d"]) -> Float[Tensor, " F"]:
    """Cosine between d_j^base and d_j^chat (0 where either vector is 0)."""
    return torch.nn.functional.cosine_similarity(W_dec[0], W_dec[1], dim=-1, eps=1e-12)


def latent_table(
    dictionary: PairDictionary, firing: FiringStats, betas: dict[str, Tensor]
) -> pd.DataFrame:
    # Decoder geometry and betas both in the coder's scaled units (each source has mean norm
    # sqrt(d)), as crosscoders.decoder_norms and latent_scaling.py (pair_dictionary.py).
    W_dec = dictionary.W_dec.float().cpu()
    norms = W_dec.norm(dim=-1)
    rel_norm = relative_decoder_norm(norms[0], norms[1])
    ratios = scaling_ratios(betas)
    flags = scaling_flags(rel_norm.double(), ratios["nu_r"], ratios["nu_eps"])
    columns: dict[str, object] = {
        "latent": np.arange(dictionary.dict_size, dtype=np.int64),
        "rel_norm": rel_norm.numpy(),
        "cosine": decoder_cosine(W_dec).numpy(),
        "latent_class": [name.replace("_", "-") for name in latent_classes(rel_norm)],
    }
    columns.update({name: value.numpy() for name, value in firing.frequencies().items()})
    columns.update(
        {
            "max_act": firing.max_act.numpy(),
            "norm_base": norms[0].numpy(),
            "norm_chat": norms[1].numpy(),
        }
    )
    columns.update({name: value.numpy() for name, value in betas.items()})
    columns.update({name: value.numpy() for name, value in ratios.items()})
    columns.update({name: value.numpy() for name, value in flags.items()})
    order = ["latent", "rel_norm", "cosine", "latent_class", "freq"]
    order += [f"freq_{name}" for name in SUBSETS]
    order += ["max_act", "norm_base", "norm_chat", *betas, *ratios, *flags]
    return pd.DataFrame(columns)[order]


def class_counts(table: pd.DataFrame) -> dict[str, int]:
    counts = table["latent_class"].value_counts()
    return {
        name: int(counts.get(name, 0)) for name in ("base-only", "shared", "chat-only", "other")
    }


def write_parquet(table: pd.DataFrame, path: Path) -> None:
    """Parquet, atomically (tmp + rename)."""
    with atomic_output(path) as tmp:
        table.to_parquet(tmp, index=False)
