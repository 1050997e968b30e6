"""Latents: the whole dictionary as a filterable, sortable table, the relative-norm and cosine
histograms and the Latent Scaling scatter; a table row, a scatter point or the number input opens
one latent."""

from functools import partial

import numpy as np
import streamlit as st

from app.latent_filters import SHOWN, SORTABLE, LatentFilter
from app.navigation import open_latent
from app.render import class_histogram, latent_from_selection, nu_scatter
from app.run_folder import current_dictionary, current_run, load_or_stop

PENDING = "latents_open"  # set by the selection callbacks, consumed at the top of the next run


def pick_row(latent_ids: np.ndarray) -> None:
    rows = st.session_state["latents_table"]["selection"]["rows"]
    if rows:
        st.session_state[PENDING] = int(latent_ids[rows[0]])


def pick_point() -> None:
    latent = latent_from_selection(st.session_state["nu_scatter"])
    if latent is not None:
        st.session_state[PENDING] = latent


if (pending := st.session_state.pop(PENDING, None)) is not None:
    open_latent(pending)

st.title("Latents")
run = load_or_stop(current_run)
dictionary = load_or_stop(current_dictionary, run)
latents = load_or_stop(run.latents, dictionary)

with st.container(border=True):
    left, middle, right = st.columns(3)
    all_classes = sorted(latents.latent_class.unique())
    classes = left.multiselect("Class", all_classes, default=all_classes, key="latents_classes")
    chat_specific_only = left.checkbox(
        "Chat-specific only",
        key="latents_chat_specific",
        help="Delta >= 0.9, nu_eps < 0.2, nu_r < 0.5 (Minder et al.)",
        disabled="chat_specific" not in latents.columns,
    )
    rel_norm = middle.slider(
        "Relative decoder norm (1 = chat-only)", 0.0, 1.0, (0.0, 1.0), 0.01, key="latents_rel_norm"
    )
    cosine = middle.slider(
        "Decoder cosine base vs chat", -1.0, 1.0, (-1.0, 1.0), 0.01, key="latents_cosine"
    )
    min_freq = right.number_input(
        "Minimum firing frequency", 0.0, 1.0, 0.0, format="%.2e", key="latents_min_freq"
    )
    sortable = [c for c in SORTABLE if c in latents.columns]
    sort_by = right.selectbox(
        "Sort by", sortable, index=sortable.index("rel_norm"), key="latents_sort"
    )
    descending = right.toggle("Descending", value=True, key="latents_descending")

shown = LatentFilter(
    tuple(classes), rel_norm, cosine, min_freq, chat_specific_only, sort_by, descending
).apply(latents)
counts = shown.latent_class.value_counts()
st.write(
    f"**{len(shown):,}** of {len(latents):,} latents of `{dictionary}` shown ("
    + ", ".join(f"{name}: {counts.get(name, 0):,}" for name in all_classes)
    + ")"
)

with st.container(horizontal=True):
    opened = st.number_input(
        "Latent id",
        0,
        int(latents.latent.max()),
        int(shown.latent.iloc[0] if len(shown) else 0),
        key="latents_open_id",
    )
    if st.button("Open latent", key="latents_open_button"):
        open_latent(opened)

st.dataframe(
    shown[[c for c in SHOWN if c in shown.columns]],
    hide_index=True,
    height=320,
    key="latents_table",
    on_select=partial(pick_row, shown.latent.to_numpy()),
    selection_mode="single-row",
    column_config={
        "freq": st.column_config.NumberColumn(format="%.2e"),
        "freq_template": st.column_config.NumberColumn(format="%.2e"),
    },
)

left, right = st.columns(2)
left.plotly_chart(
    class_histogram(shown, "rel_norm", "Relative decoder norm", "0 = base-only, 1 = chat-only"),
    key="rel_norm_hist",
)
right.plotly_chart(
    class_histogram(shown, "cosine", "Decoder cosine (base vs chat)", "cosine"), key="cosine_hist"
)
# nu_r and nu_eps are read on chat-only latents (Minder et al.); the others on request
all_classes_scatter = st.toggle("Latent Scaling of every shown latent", key="latents_nu_all")
scattered = shown if all_classes_scatter else shown[shown.latent_class == "chat-only"]
st.plotly_chart(
    nu_scatter(scattered), key="nu_scatter", on_select=pick_point, selection_mode="points"
)
