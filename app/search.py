"""The Search page's tables, from the exploring API's encoding (`steering.explore.Explorer.encode`):
which latents fire on each token of a text, with the latent's class and relative decoder norm
(Delta, 1 = chat-only) from the analysis, and each model's encoder input x_m . W_enc^m[:, j] (the
crosscoder reads both models at once: the inputs say which model drives the latent at that
token). Pure: no Streamlit, so tests compare it with the API directly."""

import html
from urllib.parse import urlencode

import pandas as pd
import torch

from app.render import CLASS_COLORS, TOKENS_CSS, visible_whitespace

TOKEN_COLUMNS = ("position", "token", "rank", "latent", "activation", "latent_class", "delta")


def source_names(coder) -> list[str]:
    """base / chat (the sources' names), else the source index."""
    return [source.name or str(m) for m, source in enumerate(coder.config.sources)]


@torch.no_grad()
def per_token_latents(encoded, coder, latents: pd.DataFrame | None, n: int) -> pd.DataFrame:
    """For every ordinary token (special tokens are never cached or ranked) its `n` largest kept
    latents, largest first (`Encoded.active`, cut to n): position, token (whitespace visible),
    rank, latent, activation f_j, latent_class and delta (relative decoder norm) from the
    analysis table `latents`, and input_<source> = the source's encoder input for that latent."""
    rows = []
    for position in range(len(encoded.tokens)):
        if bool(encoded.special[position]):
            continue
        for rank, (latent, value) in enumerate(list(encoded.active(position).items())[:n]):
            rows.append(
                {
                    "position": position,
                    "token": visible_whitespace(encoded.tokens[position]),
                    "rank": rank,
                    "latent": latent,
                    "activation": value,
                }
            )
    table = pd.DataFrame(rows, columns=["position", "token", "rank", "latent", "activation"])
    table = with_analysis(table, latents)
    names = source_names(coder)
    if len(table):
        x = coder.scale(encoded.residuals.to(coder.W_enc.device, coder.W_enc.dtype))
        positions = torch.tensor(table.position.to_numpy())
        ids = torch.tensor(table.latent.to_numpy())
        # x_m . W_enc^m[:, j] for each (position, latent) row and source m
        inputs = torch.einsum("rsd,sdr->rs", x[positions], coder.W_enc[:, :, ids]).cpu()
        for m, name in enumerate(names):
            table[f"input_{name}"] = inputs[:, m].numpy()
    else:
        for name in names:
            table[f"input_{name}"] = pd.Series(dtype=float)
    return table


def with_analysis(table: pd.DataFrame, latents: pd.DataFrame | None) -> pd.DataFrame:
    """`table` with latent_class and delta (the relative decoder norm) of each latent."""
    if latents is None:
        return table.assign(latent_class=None, delta=float("nan"))
    indexed = latents.set_index("latent")
    return table.assign(
        latent_class=table.latent.map(indexed.latent_class).to_numpy(),
        delta=table.latent.map(indexed.rel_norm).to_numpy(),
    )


def per_token_html(table: pd.DataFrame, query: dict[str, str]) -> str:
    """The per-token table as HTML: one line per token, its latents as links to the Latent page
    (`latent?latent=J` plus `query`: the run and dictionary, so the link opens the same
    dictionary), coloured by class; `data-position`, `data-latent` and `data-activation` carry the
    numbers (the browser test reads them)."""
    lines = []
    for position, rows in table.groupby("position", sort=True):
        links = []
        for row in rows.itertuples():
            href = "latent?" + urlencode(query | {"latent": str(int(row.latent))})
            color = CLASS_COLORS.get(str(row.latent_class), "#17becf")
            delta = "" if pd.isna(row.delta) else f", Δ {row.delta:.2f}"
            links.append(
                f'<a class="search-latent" target="_self" href="{html.escape(href)}" '
                f'data-position="{int(position)}" data-latent="{int(row.latent)}" '
                f'data-activation="{row.activation!r}" style="color:{color}" '
                f'title="{html.escape(str(row.latent_class))}{delta}">'
                f"{int(row.latent)}</a> ({row.activation:.3g})"
            )
        token = html.escape(rows.token.iloc[0])
        lines.append(
            f"<div><span style='background:#eee;border-radius:3px'>{token}</span> → "
            + " · ".join(links)
            + "</div>"
        )
    return f'<div class="search-tokens" style="{TOKENS_CSS}">{"".join(lines)}</div>'
