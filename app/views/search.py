"""Search: type a text, see which latents fire on each of its tokens, read from both models (the
crosscoder's latent f_j and each model's encoder input), with the latent's class and relative
decoder norm Delta; select a row to open that latent. The encoding is the exploring API's
(`steering.explore.Explorer.encode` / `top_latents`, loaded once by `live.explorer`); the text is
in the URL (`?text=...`), so a shared link reruns the same search."""

from functools import partial

import numpy as np
import streamlit as st

from app import live
from app.navigation import open_latent
from app.render import CLASS_COLORS, token_html, visible_whitespace
from app.run_folder import MissingPiece, current_dictionary, current_run, load_or_stop
from app.search import TOKEN_COLUMNS, per_token_html, with_analysis
from app.url_state import from_url, to_url, with_defaults

PENDING = "search_open"
TEXT_KEY = "search_text"
PER_TOKEN_KEY = "search_per_token"


def pick(table_key: str, latent_ids: np.ndarray) -> None:
    rows = st.session_state[table_key]["selection"]["rows"]
    if rows:
        st.session_state[PENDING] = int(latent_ids[rows[0]])


if (pending := st.session_state.pop(PENDING, None)) is not None:
    open_latent(pending)

st.title("Search latents by text")
run = load_or_stop(current_run)
dictionary = load_or_stop(current_dictionary, run)
try:
    latents = run.latents(dictionary)
except MissingPiece as error:
    st.warning(f"{error} (classes and Delta are left out)")
    latents = None

from_url("text", TEXT_KEY, str)
from_url("per_token", PER_TOKEN_KEY, int, valid=lambda n: 1 <= n <= 50)
with_defaults(TEXT_KEY, "")
with_defaults(PER_TOKEN_KEY, 5)
text = st.text_area(
    "Text",
    key=TEXT_KEY,
    placeholder="I'm sorry, but I cannot help with that.",
    help="encoded by both models at the dictionary's layer, then by the dictionary",
)
per_token = int(st.number_input("Latents per token", 1, 50, key=PER_TOKEN_KEY))
to_url("text", text, "")
to_url("per_token", per_token, 5)

if not text.strip():
    st.info(
        "Type a text above (or open a shared `?text=...` link): the page loads both models and "
        f"the dictionary `{dictionary}` on the first search (this takes a while once) and shows, "
        "for every token, the latents that fire on it."
    )
    st.stop()

found = live.guarded(
    f"the models and the dictionary `{dictionary}` of {run.root}",
    live.search,
    str(run.root),
    dictionary,
    text,
    per_token,
)
if found is None:
    st.stop()
encoded, table, top = found
table = with_analysis(table, latents)
table = table[list(TOKEN_COLUMNS) + [c for c in table.columns if c.startswith("input_")]]
top = with_analysis(top, latents).assign(token=[visible_whitespace(t) for t in top.token])

ordinary = [i for i in range(len(encoded.tokens)) if not bool(encoded.special[i])]
peak = encoded.latents.max(dim=1).values.numpy()
scale = max(float(peak[ordinary].max(initial=0.0)), 1e-9)
st.markdown(
    token_html([encoded.tokens[i] for i in ordinary], [peak[i] for i in ordinary], scale),
    unsafe_allow_html=True,
)
st.caption(
    f"shade: the largest latent activation at each token (max {scale:.3g}); "
    f"{len(ordinary)} tokens, special tokens left out as in the activation cache"
)

st.subheader("Strongest latents of the text")
if top.empty:
    st.info(
        "No latent fires on this text's ordinary tokens. Try a longer text, or text like the "
        "training data (chat turns, Wikipedia)."
    )
else:
    st.dataframe(
        top[["latent", "max_activation", "token", "position", "n_active", "latent_class", "delta"]],
        hide_index=True,
        key="search_top",
        selection_mode="single-row",
        on_select=partial(pick, "search_top", top.latent.to_numpy()),
        column_config={"delta": st.column_config.NumberColumn("Δ (rel. norm)", format="%.3f")},
    )
    counts = top.latent_class.value_counts()
    st.markdown(
        " · ".join(
            f"<span style='color:{CLASS_COLORS.get(str(c), '#17becf')}'>■</span> {c}: {n}"
            for c, n in counts.items()
        ),
        unsafe_allow_html=True,
    )

st.subheader("Latents per token")
shared = {k: st.query_params[k] for k in ("run", "dictionary") if k in st.query_params}
st.markdown(per_token_html(table, shared), unsafe_allow_html=True)
st.caption(
    "activation = the dictionary's latent f_j (the unit of the analysis tables); input_base / "
    "input_chat = each model's encoder input x_m · W_enc^m[:, j]: which model drives the latent "
    "at that token. Δ = relative decoder norm (0 base-only, 1 chat-only); colour = class. "
    "Click a latent (or select a table row) to open it."
)
st.dataframe(
    table,
    hide_index=True,
    key="search_tokens",
    height=420,
    selection_mode="single-row",
    on_select=partial(pick, "search_tokens", table.latent.to_numpy()),
    column_config={"delta": st.column_config.NumberColumn("Δ (rel. norm)", format="%.3f")},
)
