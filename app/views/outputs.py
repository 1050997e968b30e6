"""Weights and outputs: what fine-tuning changed in the weight matrices (the spectrum of each
dW and the intruder dimensions, `interp weights`), in the width of the output distribution (the
generative horizon, `interp horizon`) and in amplified generations (`interp amplify`). Reads
<run>/weights, <run>/horizon and <run>/amplification (layouts: crosscoders/diffing/{weights,
horizon, amplify}.py); each section says when its folder is missing and the rest renders."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.render import lines_by_group
from app.run_folder import MissingPiece, current_run, load_or_stop

WEIGHTS = "`interp weights --out RUN/weights`"
HORIZON = "`interp horizon --out RUN/horizon`"
AMPLIFY = "`interp amplify --out RUN/amplification`"
MATRIX_COLUMNS = ("name", "layer", "module", "effective_rank", "top1_share", "intruders")


def intruder_heatmap(by_layer: dict[str, dict[str, int]]) -> go.Figure:
    """Intruder dimensions per layer (rows) and module (columns)."""
    table = pd.DataFrame(by_layer).T.fillna(0).astype(int)
    table.index = table.index.astype(int)
    table = table.sort_index()
    figure = go.Figure(
        go.Heatmap(
            z=table.to_numpy(),
            x=list(table.columns),
            y=list(table.index),
            colorscale="Oranges",
            text=table.to_numpy(),
            texttemplate="%{text}",
            colorbar=dict(title="intruders"),
        )
    )
    figure.update_layout(
        title="Intruder dimensions per layer and module",
        xaxis_title="module",
        yaxis_title="layer",
        height=420,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    return figure


def branching_bars(classes: pd.DataFrame) -> go.Figure:
    """Branching factor exp(mean entropy) per position class, one bar group per reading."""
    figure = go.Figure()
    for (generator, model), rows in classes.groupby(["generator", "model"], sort=True):
        label = f"{model} on {'its own' if generator == model else generator + chr(39) + 's'}"
        figure.add_bar(x=rows["class"], y=rows["branching_factor"], name=label)
    figure.update_layout(
        title="Branching factor exp(mean entropy) by position class",
        yaxis_title="branching factor",
        barmode="group",
        height=360,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    return figure


st.title("Weights and outputs")
run = load_or_stop(current_run)

st.subheader("Weight changes")
try:
    summary = run.json(run.relative(run.weights / "summary.json"), WEIGHTS)
    matrices = run.parquet(run.relative(run.weights / "matrices.parquet"), WEIGHTS, MATRIX_COLUMNS)
except MissingPiece as error:
    st.warning(str(error))
else:
    left, middle, right = st.columns(3)
    left.metric("changed matrices", summary["n_changed"])
    middle.metric(
        f"intruder dimensions (k={summary.get('intruder_k')}, eps={summary.get('epsilon')})",
        summary["intruders"],
    )
    right.metric("mean effective rank of dW", f"{summary.get('mean_effective_rank', 0):.2f}")
    if summary.get("intruders_by_layer"):
        st.plotly_chart(intruder_heatmap(summary["intruders_by_layer"]), key="weights_heatmap")
    layered = matrices.dropna(subset=["layer"])
    measure = st.selectbox(
        "Per layer", ["effective_rank", "top1_share", "top_r_share", "frobenius_sq"],
        key="weights_measure",
    )  # fmt: skip
    if not layered.empty and measure in layered.columns:
        st.plotly_chart(
            lines_by_group(layered, "module", "layer", measure, f"{measure} of dW by layer"),
            key="weights_lines",
        )
    st.dataframe(
        matrices.drop(columns=["singular_values", "max_similarity"], errors="ignore"),
        hide_index=True,
    )

st.subheader("Generative horizon")
try:
    horizon = run.json(run.relative(run.horizon / "summary.json"), HORIZON)
except MissingPiece as error:
    st.warning(str(error))
else:
    classes = pd.DataFrame(horizon["classes"])
    st.caption(
        f"{horizon['n_prompts']} prompts; entropy H_t of each model's next-token distribution "
        "along both models' generations; branching factor = exp(mean H_t)."
    )
    st.plotly_chart(branching_bars(classes), key="horizon_bars")
    curves = pd.DataFrame(
        [
            {"reading": f"{c['model']} on {c['generator']}", "offset": o, "mean_entropy": h}
            for c in horizon["curves"]
            for o, h in zip(c["offset"], c["mean_entropy"], strict=True)
        ]
    )
    if not curves.empty:
        st.plotly_chart(
            lines_by_group(
                curves, "reading", "offset", "mean_entropy", "Mean entropy by response position"
            ),
            key="horizon_curves",
        )
    st.dataframe(classes, hide_index=True)

st.subheader("Amplified generations")
try:
    generations = run.json(run.relative(run.amplification / "generations.json"), AMPLIFY)
except MissingPiece as error:
    st.warning(str(error))
else:
    alphas = [row["alpha"] for row in generations]
    st.caption("logits_base + alpha (logits_chat - logits_base): alpha 0 = base, 1 = chat.")
    left, right = st.columns(2)
    alpha = left.select_slider("alpha", alphas, value=alphas[-1], key="amplify_alpha")
    chosen = next(row for row in generations if row["alpha"] == alpha)
    prompt = right.selectbox(
        "Prompt", range(len(chosen["prompts"])), format_func=lambda i: chosen["prompts"][i],
        key="amplify_prompt",
    )  # fmt: skip
    chat_row = next((row for row in generations if row["alpha"] == 1.0), None)
    unamplified, amplified = st.columns(2)
    with unamplified:
        st.markdown("**chat (alpha 1)**")
        st.text(chat_row["completions"][prompt] if chat_row else "no alpha = 1 row")
    with amplified:
        st.markdown(f"**alpha {alpha:g}**")
        st.text(chosen["completions"][prompt])
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "alpha": row["alpha"],
                    "mean NLL under chat": pd.Series(row["nll"]).mean(),
                    "first completion": row["completions"][0],
                }
                for row in generations
            ]
        ),
        hide_index=True,
    )
