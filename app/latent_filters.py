"""The Latents page's filter: a pure function of the latent table, so tests check it by hand."""

from dataclasses import dataclass

import pandas as pd

# Minder et al.: "chat-specific" = Delta >= 0.9, nu_eps < 0.2, nu_r < 0.5 (the analysis writes the
# flag as `chat_specific`; the page filters on the stored flag, never recomputes it).
SORTABLE = (
    "latent",
    "rel_norm",
    "cosine",
    "nu_r",
    "nu_eps",
    "freq",
    "max_act",
    "norm_base",
    "norm_chat",
    "beta_r_base",
    "beta_r_chat",
    "beta_eps_base",
    "beta_eps_chat",
)
SHOWN = (
    "latent",
    "latent_class",
    "rel_norm",
    "cosine",
    "nu_r",
    "nu_eps",
    "freq",
    "freq_template",
    "max_act",
    "chat_specific",
    "complete_shrinkage",
    "latent_decoupling",
)


@dataclass(frozen=True)
class LatentFilter:
    classes: tuple[str, ...]
    rel_norm: tuple[float, float] = (0.0, 1.0)
    cosine: tuple[float, float] = (-1.0, 1.0)
    min_freq: float = 0.0
    chat_specific_only: bool = False
    sort_by: str = "rel_norm"
    descending: bool = True

    def apply(self, latents: pd.DataFrame) -> pd.DataFrame:
        """The latents that pass every condition (bounds inclusive), sorted."""
        keep = (
            latents.latent_class.isin(self.classes)
            & latents.rel_norm.between(*self.rel_norm)
            & latents.cosine.between(*self.cosine)
            & (latents.freq >= self.min_freq)
        )
        if self.chat_specific_only:
            keep &= latents.chat_specific.astype(bool)
        return latents[keep].sort_values(
            self.sort_by, ascending=not self.descending, kind="stable", na_position="last"
        )
