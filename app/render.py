"""Pure rendering helpers of the app: token highlighting as HTML and the plotly figures.

Nothing here reads files or calls Streamlit, so each helper is testable on its own.
"""

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

POSITIVE_RGB = (255, 128, 0)  # orange: the latent fires / the score is high
NEGATIVE_RGB = (30, 110, 255)  # blue: negative values (signed per-model contributions)
CLASS_ORDER = ("shared", "other", "base-only", "chat-only")  # drawn in this order: rare ones on top
CLASS_COLORS = {
    "base-only": "#1f77b4",
    "shared": "#7f7f7f",
    "chat-only": "#d62728",
    "other": "#bcbd22",
}
SHIFT_COLORS = {"unshifted": "#2ca02c", "marginal": "#ff7f0e", "shifted": "#d62728"}
# One colour per diffing / steering method, on every page and plot (the Steering page's lines,
# the Diffing page's score table and ADL / TuCo samples). Names are matched case-insensitively
# on their first word ("crosscoder batchtopk" -> crosscoder, "ADL steering (chat)" -> adl).
METHOD_COLORS = {
    "lineas": "#1f77b4",
    "mean-diff": "#ff7f0e",
    "latents": "#2ca02c",
    "tuco": "#9467bd",
    "adl": "#8c564b",
    "crosscoder": "#d62728",
    "difference": "#e377c2",  # difference SAE
    "linear": "#17becf",
    "none": "#7f7f7f",
}
OTHER_METHOD_COLORS = ("#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
# fonts that cover the tokens the models produce (Latin, Cyrillic, Greek, CJK, symbols, emoji)
TOKEN_FONTS = (
    '"DejaVu Sans Mono", "Noto Sans Mono", ui-monospace, "DejaVu Sans", "Noto Sans", '
    '"Noto Sans CJK SC", "Noto Sans Symbols", "Noto Sans Symbols 2", "Noto Color Emoji", '
    "monospace"
)
TOKENS_CSS = (
    f"font-family: {TOKEN_FONTS}; font-size: 0.9rem; line-height: 1.9; "
    "white-space: pre-wrap; word-break: break-word; margin-bottom: 0.3rem"
)
WHITESPACE_MARKS = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}
SENTENCEPIECE_SPACE = "▁"  # how SentencePiece tokenizers spell a leading space


def method_color(method: str) -> str:
    """The fixed colour of a method (METHOD_COLORS by its first word, lower-cased; other names
    get a colour from OTHER_METHOD_COLORS chosen by a stable hash of the name)."""
    name = str(method).strip().lower()
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    first = name.replace("(", " ").split(" ")[0] if name else ""
    if first in METHOD_COLORS:
        return METHOD_COLORS[first]
    return OTHER_METHOD_COLORS[sum(name.encode()) % len(OTHER_METHOD_COLORS)]


def visible_whitespace(token: str) -> str:
    """A token with its whitespace made visible: '·' for a space (SentencePiece's '▁' too), '↵'
    for a newline, '→' for a tab, so that a leading space is never lost."""
    token = token.replace(SENTENCEPIECE_SPACE, " ")
    return "".join(WHITESPACE_MARKS.get(character, character) for character in token)


def display_token(token: str) -> str:
    """A token as shown in the page: whitespace made visible, HTML escaped."""
    return html.escape(visible_whitespace(token))


def log_axis(axis_type_update) -> None:
    """One tick label per decade on a log axis (plotly's default adds 2 and 5 inside each decade
    and repeats them: "100, 5, 2, 10, 5, 2, 1")."""
    axis_type_update(type="log", dtick=1, tickformat="~g")


def token_html(
    tokens: Sequence[str],
    values: Sequence[float],
    scale: float,
    label: str | None = None,
    outlined: Sequence[bool] | None = None,
    outline_colors: Sequence[str] | None = None,
) -> str:
    """Tokens as `<span>`s whose background opacity is |value| / scale (clipped to 1): orange
    for positive values, blue for negative ones. Spans with a non-zero value carry the class
    `tok-on` (the browser test looks for them); `title` shows the exact value on hover.
    `outlined` marks tokens to box (e.g. the max-activating position) in `outline_colors`."""
    assert len(tokens) == len(values), f"{len(tokens)} tokens but {len(values)} values"
    spans = []
    for i, (token, value) in enumerate(zip(tokens, values, strict=True)):
        value = float(value)
        opacity = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
        red, green, blue = POSITIVE_RGB if value >= 0 else NEGATIVE_RGB
        style = f"background-color: rgba({red},{green},{blue},{opacity:.2f}); border-radius: 3px"
        if outlined is not None and outlined[i]:
            color = outline_colors[i] if outline_colors is not None else "#000"
            style += f"; outline: 2px solid {color}"
        css_class = "tok tok-on" if value != 0 else "tok"
        spans.append(
            f'<span class="{css_class}" title="{value:.4g}" style="{style}">'
            f"{display_token(token)}</span>"
        )
    prefix = f"<b>{html.escape(label)}</b> " if label else ""
    return f'<div class="tokens" style="{TOKENS_CSS}">{prefix}{"".join(spans)}</div>'


def tokens_of(token_ids: Sequence[int], token_strings: Mapping[int, str]) -> list[str]:
    """Token strings for ids; an id missing from tokens.json shows as `<id>`."""
    return [token_strings.get(int(t), f"<{int(t)}>") for t in token_ids]


def histogram(
    values: np.ndarray, title: str, x_title: str, bins: int = 60, log_y: bool = True
) -> go.Figure:
    """A histogram binned here (numpy) so that only the bar heights travel to the browser."""
    finite = values[np.isfinite(values)]
    counts, edges = np.histogram(finite, bins=bins)
    figure = go.Figure(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker_color="#4c78a8"
        )
    )
    figure.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title="latents",
        bargap=0,
        height=300,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    if log_y:
        log_axis(figure.update_yaxes)
    return figure


def by_class(latents: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(class, rows) in CLASS_ORDER, unknown classes last."""
    groups = dict(list(latents.groupby("latent_class", sort=True)))
    order = [c for c in CLASS_ORDER if c in groups] + sorted(set(groups) - set(CLASS_ORDER))
    return [(str(name), groups[name]) for name in order]


def class_histogram(
    latents: pd.DataFrame, column: str, title: str, x_title: str, bins: int = 50
) -> go.Figure:
    """Per-class histograms of one latent column, overlaid (counts on a log axis)."""
    values = latents[column].to_numpy(dtype=float)
    edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=bins)
    figure = go.Figure()
    for name, group in by_class(latents):
        counts, _ = np.histogram(group[column].to_numpy(dtype=float), bins=edges)
        figure.add_bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=counts,
            width=np.diff(edges),
            name=name,
            marker_color=CLASS_COLORS.get(str(name), "#17becf"),
            opacity=0.75,
        )
    figure.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title="latents",
        barmode="overlay",  # stacking misleads on a log axis: each class keeps its own bars
        bargap=0,
        height=320,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    log_axis(figure.update_yaxes)
    return figure


def nu_scatter(latents: pd.DataFrame) -> go.Figure:
    """nu_eps (x) vs nu_r (y), one point per latent with finite ratios (Minder et al.'s figure);
    the latent id rides along as customdata so that a click can open it."""
    finite = latents[np.isfinite(latents.nu_r) & np.isfinite(latents.nu_eps)]
    figure = go.Figure()
    for name, group in by_class(finite):
        figure.add_scattergl(
            x=group.nu_eps.to_numpy(),
            y=group.nu_r.to_numpy(),
            mode="markers",
            name=str(name),
            customdata=group.latent.to_numpy(),
            marker=dict(size=5, opacity=0.7, color=CLASS_COLORS.get(str(name))),
            hovertemplate="latent %{customdata}<br>nu_eps %{x:.3f}<br>nu_r %{y:.3f}<extra></extra>",
        )
    figure.update_layout(
        title="Latent Scaling: nu_eps vs nu_r (click a point to open it)",
        xaxis_title="nu_eps = beta_eps(base) / beta_eps(chat)",
        yaxis_title="nu_r = beta_r(base) / beta_r(chat)",
        height=380,
        margin=dict(l=40, r=10, t=40, b=40),
        clickmode="event+select",
    )
    return figure


def latent_from_selection(selection: Any) -> int | None:
    """The latent id of the first selected point of a plotly selection event, else None."""
    points = (selection or {}).get("selection", {}).get("points", [])
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, list | tuple):
            custom = custom[0] if custom else None
        if custom is not None:
            return int(custom)
    return None


def bar_histogram(
    bin_edges: Sequence[float], counts: Sequence[int], title: str, density: bool, log_y: bool
) -> go.Figure:
    """A stored histogram (edges + counts); as a density, counts / (total * bin width)."""
    edges = np.asarray(bin_edges, dtype=float)
    heights = np.asarray(counts, dtype=float)
    widths = np.diff(edges)
    if density:
        heights = heights / max(heights.sum(), 1.0) / np.where(widths > 0, widths, 1.0)
    figure = go.Figure(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=heights,
            width=widths,
            marker_color=f"rgb{POSITIVE_RGB}",
        )
    )
    figure.update_layout(
        title=title,
        xaxis_title="activation",
        yaxis_title="density" if density else "tokens",
        bargap=0.02,
        height=300,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    if log_y:
        log_axis(figure.update_yaxes)
    return figure


def box_by_group(table: pd.DataFrame, group: str, value: str, title: str) -> go.Figure:
    figure = go.Figure()
    for name, rows in table.groupby(group, sort=True):
        figure.add_box(
            y=rows[value].to_numpy(),
            name=str(name),
            boxpoints="all",
            jitter=0.4,
            pointpos=0,
            customdata=rows.index.to_numpy(),
        )
    figure.update_layout(
        title=title,
        yaxis_title=value,
        height=360,
        showlegend=False,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    return figure


def lines_by_group(table: pd.DataFrame, group: str, x: str, y: str, title: str) -> go.Figure:
    """One line per group (a method: its fixed colour from `method_color`)."""
    figure = go.Figure()
    for name, rows in table.sort_values(x).groupby(group, sort=True):
        figure.add_scatter(
            x=rows[x].to_numpy(),
            y=rows[y].to_numpy(),
            mode="lines+markers",
            name=str(name),
            line=dict(color=method_color(str(name))),
        )
    figure.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, height=320, margin=dict(l=40, r=10, t=40, b=40)
    )
    return figure


def density_histogram(freq: np.ndarray, bins: int = 50) -> tuple[go.Figure, int]:
    """The feature-density histogram: log10 firing frequency over the latents that fired (a dead
    latent, frequency 0, has no logarithm: it is counted apart and returned with the figure)."""
    freq = np.asarray(freq, dtype=float)
    alive = freq[freq > 0]
    n_dead = int((freq <= 0).sum())
    figure = histogram(
        np.log10(alive),
        f"Feature density: {alive.size:,} live latents ({n_dead:,} dead, not shown)",
        "log10 firing frequency (share of tokens where the latent fires)",
        bins=bins,
        log_y=False,
    )
    return figure, n_dead
