"""Latents: the whole dictionary as a filterable, sortable table (with each latent's top
activating tokens), the feature-density histogram (log10 firing frequency; dead latents counted
apart), the relative-norm and cosine histograms and the Latent Scaling scatter; a table row, a
scatter point or the number input opens one latent. The filters live in the URL
(app/url_state.py): a shared link shows the same selection."""

from functools import partial

import numpy as np
import streamlit as st

from app.latent_filters import SHOWN, SORTABLE, LatentFilter
from app.latent_tokens import top_token_labels
from app.navigation import open_latent
from app.render import class_histogram, density_histogram, latent_from_selection, nu_scatter
from app.run_folder import ANALYZE, current_dictionary, current_run, load_or_stop
from app.url_state import (
    format_bool,
    format_list,
    format_range,
    from_url,
    parse_bool,
    parse_list,
    parse_range,
    to_url,
    with_defaults,
)

PENDING = "latents_open"  # set by the selection callbacks, consumed at the top of the next run


def pick_row(latent_ids: np.ndarray) -> None:
    rows = st.session_state["latents_table"]["selection"]["rows"]
    if rows:
        st.session_state[PENDING] = int(latent_ids[rows[0]])


@st.cache_resource(show_spinner=False, max_entries=32)
def figures(_shown, _scattered, key: tuple) -> dict:
    """The page's figures for one selection (`key`: the latents file, its version and the
    filters), built once: plotly's figure construction is most of a rerun's cost otherwise."""
    density, n_dead = density_histogram(_shown.freq.to_numpy())
    return {
        "density": density,
        "n_dead": n_dead,
        "rel_norm": class_histogram(
            _shown, "rel_norm", "Relative decoder norm", "0 = base-only, 1 = chat-only"
        ),
        "cosine": class_histogram(_shown, "cosine", "Decoder cosine (base vs chat)", "cosine"),
        "nu": nu_scatter(_scattered),
    }


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

all_classes = sorted(latents.latent_class.unique())
sortable = [c for c in SORTABLE if c in latents.columns]
# (query key, widget key, default, parse, format, valid)
FILTERS = (
    ("classes", "latents_classes", all_classes, parse_list, format_list,
     lambda v: set(v) <= set(all_classes)),
    ("chat_specific", "latents_chat_specific", False, parse_bool, format_bool, lambda v: True),
    ("rel_norm", "latents_rel_norm", (0.0, 1.0), parse_range, format_range,
     lambda v: 0.0 <= v[0] <= v[1] <= 1.0),
    ("cosine", "latents_cosine", (-1.0, 1.0), parse_range, format_range,
     lambda v: -1.0 <= v[0] <= v[1] <= 1.0),
    ("min_freq", "latents_min_freq", 0.0, float, "{:g}".format, lambda v: 0.0 <= v <= 1.0),
    ("sort", "latents_sort", "rel_norm", str, str, sortable.__contains__),
    ("descending", "latents_descending", True, parse_bool, format_bool, lambda v: True),
    ("nu_all", "latents_nu_all", False, parse_bool, format_bool, lambda v: True),
)  # fmt: skip
for query, key, default, parse, _, valid in FILTERS:
    from_url(query, key, parse, valid)
    with_defaults(key, default)
# classes of another dictionary (the sidebar switched) are dropped, not an error
st.session_state["latents_classes"] = [
    c for c in st.session_state["latents_classes"] if c in all_classes
]

with st.container(border=True):
    left, middle, right = st.columns(3)
    classes = left.multiselect("Class", all_classes, key="latents_classes")
    chat_specific_only = left.checkbox(
        "Chat-specific only",
        key="latents_chat_specific",
        help="Delta >= 0.9, nu_eps < 0.2, nu_r < 0.5 (Minder et al.)",
        disabled="chat_specific" not in latents.columns,
    )
    rel_norm = middle.slider(
        "Relative decoder norm (1 = chat-only)", 0.0, 1.0, step=0.01, key="latents_rel_norm"
    )
    cosine = middle.slider(
        "Decoder cosine base vs chat", -1.0, 1.0, step=0.01, key="latents_cosine"
    )
    min_freq = right.number_input(
        "Minimum firing frequency", 0.0, 1.0, format="%.2e", key="latents_min_freq"
    )
    sort_by = right.selectbox("Sort by", sortable, key="latents_sort")
    descending = right.toggle("Descending", key="latents_descending")

shown = LatentFilter(
    tuple(classes), rel_norm, cosine, min_freq, chat_specific_only, sort_by, descending
).apply(latents)
for query, key, default, _, format_value, _ in FILTERS:
    to_url(query, st.session_state[key], default, format_value)
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

table = shown[[c for c in SHOWN if c in shown.columns]]
examples_path = run.analysis(dictionary) / "examples.parquet"
tokens_path = run.analysis(dictionary) / "tokens.json"
if examples_path.is_file() and tokens_path.is_file():
    labels = top_token_labels(examples_path, tokens_path)
    table = table.assign(top_tokens=shown.latent.map(labels).fillna("").to_numpy())
else:
    st.caption(
        f"no top tokens: analysis/{dictionary}/examples.parquet or tokens.json is missing "
        f"({ANALYZE} writes them)"
    )
st.dataframe(
    table,
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

# nu_r and nu_eps are read on chat-only latents (Minder et al.); the others on request
all_classes_scatter = st.session_state["latents_nu_all"]
scattered = shown if all_classes_scatter else shown[shown.latent_class == "chat-only"]
latents_file = run.analysis(dictionary) / "latents.parquet"
version = (str(latents_file), latents_file.stat().st_mtime_ns, latents_file.stat().st_size)
selection = (classes, rel_norm, cosine, min_freq, chat_specific_only, all_classes_scatter)
drawn = figures(shown, scattered, version + tuple(map(str, selection)))
n_dead = drawn["n_dead"]
left, right = st.columns([3, 1])
left.plotly_chart(drawn["density"], key="density_hist")
right.metric(
    "dead latents (never fired)",
    f"{n_dead:,}",
    help="latents whose firing frequency over the analysed tokens is 0: log10 is undefined, so "
    "the histogram leaves them out",
)
right.caption(
    "Feature density over the shown latents: a healthy dictionary has most latents between "
    "1e-4 and 1e-1; a spike at the right means dense latents, many dead ones an undertrained "
    "or over-sparse dictionary."
)

left, right = st.columns(2)
left.plotly_chart(drawn["rel_norm"], key="rel_norm_hist")
right.plotly_chart(drawn["cosine"], key="cosine_hist")
st.toggle("Latent Scaling of every shown latent", key="latents_nu_all")
finite = np.isfinite(scattered.nu_r) & np.isfinite(scattered.nu_eps)
if not finite.any():
    st.info(
        "The Latent Scaling scatter is empty: "
        + (
            "no shown latent has finite nu_eps and nu_r (nu = beta(base) / beta(chat) is "
            "undefined where beta(chat) is 0)."
            if all_classes_scatter or len(scattered)
            else f"this dictionary has no chat-only latent (relative norm >= 0.9) among the "
            f"{len(shown):,} shown. That is a finding, not an error: fine-tuning changed too "
            "little at this layer for a dedicated latent. Try the toggle above (every shown "
            "latent), widen the filters, or look at another dictionary or layer."
        ),
        icon=":material/scatter_plot:",
    )
else:
    st.plotly_chart(drawn["nu"], key="nu_scatter", on_select=pick_point, selection_mode="points")
