"""Latent: one latent of the dictionary. Its geometry and Latent Scaling values, max-activating
and quantile examples with token highlighting (the latent's activation, and each model's share
where the analysis stored it), the activation histogram, the decoder direction's top and bottom
logits through each model's unembedding, its nearest latents, and live activations on any text."""

import html
from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from app import live
from app.latent_tokens import top_token_labels
from app.navigation import LATENT_QUERY, open_latent
from app.render import TOKEN_FONTS, bar_histogram, token_html, tokens_of, visible_whitespace
from app.run_folder import (
    ANALYZE,
    MissingPiece,
    current_dictionary,
    current_run,
    load_or_stop,
)

LATENT_KEY = "latent_id"
PENDING = "latent_open"
SCALING = (
    "beta_r_base",
    "beta_r_chat",
    "beta_eps_base",
    "beta_eps_chat",
    "nu_r",
    "nu_eps",
    "complete_shrinkage",
    "latent_decoupling",
    "chat_specific",
)
FREQUENCIES = ("freq", "freq_wiki", "freq_chat", "freq_template", "freq_other")
MODEL_INPUTS = (("acts_base", "base"), ("acts_chat", "chat"))


def pick_neighbor(neighbor_ids: np.ndarray) -> None:
    rows = st.session_state["latent_neighbors"]["selection"]["rows"]
    if rows:
        st.session_state[PENDING] = int(neighbor_ids[rows[0]])


def examples_html(
    examples: pd.DataFrame,
    token_strings: dict[int, str],
    scale: float,
    input_scale: float | None,
) -> str:
    """All examples of one kind as one HTML block (one Streamlit element, however many rows).
    With `input_scale`, each example also shows each model's encoder input x_m . W_enc^m[:, j]
    (acts_base / acts_chat: which model drives the latent; blue where negative)."""
    blocks = []
    for row in examples.itertuples():
        tokens = tokens_of(row.token_ids, token_strings)
        peak_index = row.max_index if "max_index" in examples.columns else row.position
        peak = [i == peak_index for i in range(len(tokens))]
        caption = (
            f"<div style='color:#666;font-size:0.8rem'>{row.kind} #{row.rank} · activation "
            f"{row.activation:.3g} · sequence {row.seq_id}, position {row.position}</div>"
        )
        per_model = input_scale is not None
        lines = [token_html(tokens, row.acts, scale, "latent" if per_model else None, peak)]
        if per_model:
            lines += [
                token_html(tokens, getattr(row, column), input_scale, name, peak)
                for column, name in MODEL_INPUTS
            ]
        blocks.append(caption + "".join(lines))
    return "<hr style='margin:0.4rem 0'>".join(blocks)


def scaling_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)


def warn_missing(error: MissingPiece) -> None:
    st.warning(str(error))


if (pending := st.session_state.pop(PENDING, None)) is not None:
    open_latent(pending)

run = load_or_stop(current_run)
dictionary = load_or_stop(current_dictionary, run)
latents = load_or_stop(run.latents, dictionary)
n_latents = int(latents.latent.max()) + 1

requested = st.query_params.get(LATENT_QUERY)
if requested is not None and requested.isdigit() and int(requested) < n_latents:
    if st.session_state.get("_latent_from_query") != requested:
        st.session_state[LATENT_KEY] = int(requested)
        st.session_state["_latent_from_query"] = requested
if LATENT_KEY not in st.session_state:  # the most chat-leaning latent that has examples
    with_examples = latents[latents.latent.isin(run.latents_with_examples(dictionary))]
    candidates = with_examples if len(with_examples) else latents
    st.session_state[LATENT_KEY] = int(candidates.sort_values("rel_norm").latent.iloc[-1])
head, picker = st.columns([4, 1], vertical_alignment="bottom")
latent = int(picker.number_input(f"Latent (0..{n_latents - 1})", 0, n_latents - 1, key=LATENT_KEY))
st.query_params[LATENT_QUERY] = str(latent)
st.session_state["_latent_from_query"] = str(latent)

if latent not in set(latents.latent):
    st.error(f"latent {latent} is not in analysis/{dictionary}/latents.parquet")
    st.stop()
row = latents.set_index("latent").loc[latent]
head.title(f"Latent {latent} · {row.latent_class}")
columns = st.columns(5)
columns[0].metric("Relative norm (1 = chat-only)", f"{row.rel_norm:.3f}")
columns[1].metric("Decoder cosine", f"{row.cosine:.3f}")
columns[2].metric("Firing frequency", f"{row.freq:.2e}")
columns[3].metric("Max activation", f"{row.max_act:.3g}")
columns[4].metric("nu_eps / nu_r", f"{row.nu_eps:.2f} / {row.nu_r:.2f}")

examples_file = run.analysis(dictionary) / "examples.parquet"
tokens_file = run.analysis(dictionary) / "tokens.json"
if examples_file.is_file() and tokens_file.is_file():
    peaks = top_token_labels(examples_file, tokens_file, n=8).get(latent)
    st.markdown(
        f"**Top activating tokens** (peak token of each max-activating example, × how many): "
        f"<span style='font-family:{TOKEN_FONTS}'>{html.escape(peaks)}</span>"
        if peaks
        else "**Top activating tokens**: none stored for this latent",
        unsafe_allow_html=True,
    )

st.subheader("Examples")
try:
    examples = run.examples(dictionary, latent)
    token_strings = run.token_strings(dictionary)
except MissingPiece as error:
    warn_missing(error)
else:
    if examples.empty:
        st.info(
            f"The analysis stored no examples for latent {latent} ({ANALYZE} keeps examples "
            "for a subset of latents)."
        )
    else:
        has_inputs = all(column in examples.columns for column, _ in MODEL_INPUTS)
        per_model = st.toggle(
            "Per-model encoder inputs (base / chat)",
            value=has_inputs,
            disabled=not has_inputs,
            key="latent_per_model",
            help="x_m . W_enc^m[:, j] for each model m: which model's activation drives the latent",
        )
        scale = float(max(examples.activation.max(), row.max_act))
        input_scale = None
        if per_model:
            inputs = [np.abs(np.concatenate(examples[c].to_numpy())) for c, _ in MODEL_INPUTS]
            input_scale = max(float(max(a.max(initial=0.0) for a in inputs)), 1e-9)
        top, quantiles = st.tabs(["Max-activating", "Quantile samples"])
        with top:
            rows = examples[examples.kind == "top"].sort_values("rank")
            st.markdown(
                examples_html(rows, token_strings, scale, input_scale), unsafe_allow_html=True
            )
        with quantiles:
            rows = examples[examples.kind != "top"].sort_values(["kind", "rank"])
            if rows.empty:
                st.info("no quantile samples stored for this latent")
            st.markdown(
                examples_html(rows, token_strings, scale, input_scale), unsafe_allow_html=True
            )
        st.caption(
            f"shading: the latent's activation over {scale:.3g} (its max)"
            + (f"; encoder inputs over {input_scale:.3g}" if input_scale else "")
            + "; boxed: the example's token"
        )

left, right = st.columns(2)
with left:
    st.subheader("Latent Scaling")
    st.caption(
        "beta: how much of the latent's decoder direction each model's reconstruction (r) "
        "and error (eps) carries; nu = beta(base) / beta(chat) (Minder et al.)."
    )
    shown = [c for c in SCALING if c in row.index]
    st.dataframe(pd.DataFrame({"value": [scaling_value(row[c]) for c in shown]}, index=shown))
with right:
    st.subheader("Firing frequency by data")
    shown = [c for c in FREQUENCIES if c in row.index]
    st.dataframe(
        pd.DataFrame({"frequency": [row[c] for c in shown]}, index=shown),
        column_config={"frequency": st.column_config.NumberColumn(format="%.3e")},
    )

left, right = st.columns(2)
with left:
    st.subheader("Activation distribution")
    try:
        hist = run.rows_of(
            run.analysis(dictionary) / "activation_hist.parquet", latent, ("bin_edges", "counts")
        )
    except MissingPiece as error:
        warn_missing(error)
    else:
        if hist.empty:
            st.info(f"no histogram stored for latent {latent}")
        else:
            density = st.toggle("Density", key="latent_density")
            log_y = st.toggle("Log scale", value=True, key="latent_log")
            st.plotly_chart(
                bar_histogram(
                    hist.bin_edges.iloc[0],
                    hist.counts.iloc[0],
                    f"Activations of latent {latent} (where it fires)",
                    density,
                    log_y,
                ),
                key="latent_hist",
            )
with right:
    st.subheader("Nearest latents (decoder cosine)")
    try:
        neighbors = run.rows_of(
            run.analysis(dictionary) / "neighbors.parquet", latent, ("neighbor", "cosine")
        )
    except MissingPiece as error:
        warn_missing(error)
    else:
        neighbors = neighbors.sort_values("cosine", ascending=False).merge(
            latents[["latent", "latent_class", "rel_norm"]].rename(columns={"latent": "neighbor"}),
            on="neighbor",
            how="left",
        )[["neighbor", "cosine", "latent_class", "rel_norm"]]
        st.dataframe(
            neighbors,
            hide_index=True,
            key="latent_neighbors",
            selection_mode="single-row",
            on_select=partial(pick_neighbor, neighbors.neighbor.to_numpy()),
        )
        st.caption("select a row to open that latent")

st.subheader("Decoder direction through each model's unembedding")
try:
    logits = run.rows_of(
        run.analysis(dictionary) / "decoder_logits.parquet",
        latent,
        ("model", "top_tokens", "top_values", "bottom_tokens", "bottom_values"),
    )
except MissingPiece as error:
    warn_missing(error)
else:
    if logits.empty:
        st.info(
            f"no decoder logits stored for latent {latent} (the analysis keeps them for the "
            "non-shared latents first, up to its --max-logit-latents)"
        )
    for column, (_, model_row) in zip(
        st.columns(max(len(logits), 1)), logits.iterrows(), strict=False
    ):
        with column:
            st.markdown(f"**{model_row.model}**")
            st.dataframe(
                pd.DataFrame(
                    {
                        "top token": [visible_whitespace(t) for t in model_row.top_tokens],
                        "top logit": list(model_row.top_values),
                        "bottom token": [visible_whitespace(t) for t in model_row.bottom_tokens],
                        "bottom logit": list(model_row.bottom_values),
                    }
                ),
                hide_index=True,
            )

st.subheader("Live activations")
text = st.text_area("Text", "The capital of France is Paris.", key="latent_live_text")
if st.button("Compute activations", key="latent_live_button"):
    info = load_or_stop(run.info)
    folder = run.dictionary(dictionary)
    coder = live.guarded(
        f"the dictionary in {folder}", live.pair_dictionary, str(folder), info.get("layer")
    )
    pair = None
    if coder is not None:
        base, chat = live.dictionary_models(coder, info)
        if not base or not chat:
            st.error(
                f"no base/chat model specs: the dictionary has no sources and {run.root} names "
                "no models (run.json, the cache manifest or a step's config.json)"
            )
            st.stop()
        pair = live.guarded(f"the models {base!r} / {chat!r}", live.model_pair, base, chat)
    if pair is not None:
        ids, acts = live.latent_activations(pair, coder, text, latent)
        tokens = [pair.tokenizer.decode([i]) for i in ids]
        scale = float(max(row.max_act, acts.max(initial=0.0)))
        st.markdown(token_html(tokens, acts, scale), unsafe_allow_html=True)
        st.caption(
            f"max activation on this text {acts.max(initial=0.0):.3g}; colour scale {scale:.3g} "
            f"(the latent's max over the dataset); models {base} / {chat}"
        )

st.subheader("Steer with this latent")
st.caption(
    "`add`: the residual stream at the dictionary's layer gets strength x value x d_j (the "
    "latent's decoder direction for that model); `clamp`: the latent's activation is held at "
    "value (strength 1 replaces its share of the reconstruction, 0 is the unsteered model). "
    "Both models are steered, each with its own decoder direction "
    "(steering.explore.Explorer.steer)."
)
left, middle, right = st.columns(3)
steer_mode = left.radio("Mode", ("add", "clamp"), horizontal=True, key="latent_steer_mode")
steer_value = left.number_input(
    "Value (activation units; default: the latent's max activation)",
    value=float(round(row.max_act, 3)),
    key=f"latent_steer_value_{dictionary}_{latent}",
)
steer_strength = middle.slider("Strength", -4.0, 8.0, 1.0, 0.25, key="latent_steer_strength")
steer_tokens = right.number_input("New tokens", 1, 200, 32, key="latent_steer_tokens")
steer_prompt = st.text_area("Prompt", "Tell me about your day.", key="latent_steer_prompt")
request = (dictionary, latent, steer_mode, steer_value, steer_strength, steer_tokens, steer_prompt)
if st.button("Steer", key="latent_steer_button"):
    explorer = live.guarded(
        f"the models and the dictionary `{dictionary}` of {run.root}",
        live.explorer,
        str(run.root),
        dictionary,
    )
    if explorer is not None:
        st.session_state["latent_steer_result"] = (
            request,
            live.steer_both(
                explorer,
                latent,
                steer_prompt,
                steer_mode,
                float(steer_value),
                float(steer_strength),
                int(steer_tokens),
            ),
        )
shown_request, generations = st.session_state.get("latent_steer_result", (None, None))
if generations is not None and shown_request == request:
    for column, (model, texts) in zip(st.columns(2), generations.items(), strict=True):
        with column:
            st.markdown(f"**{model}**, steered ({steer_mode}, strength {steer_strength:g})")
            st.text(texts["steered"])
            st.markdown(f"**{model}**, unsteered")
            st.text(texts["unsteered"])
elif generations is not None:
    st.caption("the settings changed since the last generation: press Steer again")
