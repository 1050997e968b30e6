"""TuCo: the fine-tuning contribution (Nuti et al. 2025) per prompt set, per token of one prompt,
and the alpha-scaled model's completions side by side. Reads what `interp tuco experiments`
wrote into <run>/tuco (layout: interp/tuco_experiments.py)."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.render import box_by_group, token_html
from app.run_folder import TUCO, MissingPiece, current_run, load_or_stop, show_missing

SUMMARY_METRICS = {
    "auc_plain_vs_jailbreak": "AUC plain vs jailbreak (TuCo)",
    "auc_failed_vs_succeeded": "AUC failed vs succeeded jailbreaks",
    "jailbreak_succeeded": "Jailbreaks succeeded",
}
SUMMARY_HELP = {
    SUMMARY_METRICS["auc_plain_vs_jailbreak"]: "P(TuCo of a plain harmful prompt > TuCo of a "
    "jailbreak-wrapped one): > 0.5 means jailbreaks lower TuCo (Nuti et al.), 0.5 is chance",
    SUMMARY_METRICS["auc_failed_vs_succeeded"]: "P(TuCo of a failed jailbreak > TuCo of a "
    "successful one): > 0.5 means successful attacks have lower TuCo",
}


def auc_caveat(summary: dict) -> str | None:
    """The direction and sample sizes of the plain-vs-jailbreak AUC (summary.json's n_prompts),
    so that 0.000 reads as "every jailbreak scored higher", not as a failure."""
    auc = summary.get("auc_plain_vs_jailbreak")
    if auc is None:
        return None
    counts = summary.get("n_prompts", {})
    n_plain, n_jailbreak = counts.get("harmful", "?"), counts.get("jailbreak", "?")
    reading = (
        "jailbreak-wrapped prompts have lower TuCo than plain ones, as in Nuti et al."
        if auc > 0.5
        else "jailbreak-wrapped prompts have higher TuCo than plain ones (the paper's direction "
        "is the opposite)"
        if auc < 0.5
        else "no separation (chance)"
    )
    return (
        f"AUC plain vs jailbreak = P(TuCo plain harmful > TuCo jailbreak) = {auc:.3f}, over "
        f"n = {n_plain} plain harmful and {n_jailbreak} jailbreak prompts: {reading}."
    )


st.title("Tuning contribution (TuCo)")
run = load_or_stop(current_run)
scores = pd.DataFrame(load_or_stop(run.json, run.tuco / "scores.json", TUCO))
absent = {"set", "prompt", "tokens", "tuco", "per_token"} - set(scores.columns)
if absent:
    show_missing(
        MissingPiece(
            f"tuco/scores.json in {run.root} lacks the fields {sorted(absent)} ({TUCO} writes them)"
        )
    )
st.caption(
    "TuCo = ||sum_l FTC_l||_1 / (||sum_l PTC_l||_1 + ||sum_l FTC_l||_1) at the last prompt "
    "token: the share of the chat model's residual update that fine-tuning contributes."
)

if run.has(run.tuco / "summary.json"):
    summary = run.json(run.tuco / "summary.json", TUCO)
    shown = {
        label: summary[key]
        for key, label in SUMMARY_METRICS.items()
        if summary.get(key) is not None
    }
    for column, (label, value) in zip(st.columns(max(len(shown), 1)), shown.items(), strict=False):
        column.metric(
            label,
            f"{value:.3f}" if isinstance(value, float) else str(value),
            help=SUMMARY_HELP.get(label),
        )
    if (caveat := auc_caveat(summary)) is not None:
        st.caption(caveat)

st.subheader("Distribution per prompt set")
metrics = [m for m in ("tuco", "output_contribution") if m in scores.columns]
metric = st.selectbox("Score", metrics, key="tuco_metric")
st.plotly_chart(
    box_by_group(scores.dropna(subset=[metric]), "set", metric, f"{metric} by prompt set"),
    key="tuco_box",
)

st.subheader("Per-token view")
labels = [f"{row.set}: {row.prompt[:90]}" for row in scores.itertuples()]
chosen = st.selectbox(
    "Prompt", range(len(scores)), format_func=labels.__getitem__, key="tuco_prompt"
)
prompt = scores.iloc[chosen]
tokens = list(prompt.tokens)  # token_html shows SentencePiece's leading space as a visible mark
scale = max(max(prompt.per_token, default=0.0), 1e-9)
st.markdown(token_html(tokens, prompt.per_token, scale), unsafe_allow_html=True)
st.caption(
    f"TuCo at each token (darker = more fine-tuning contribution; max {scale:.3f}); the "
    f"score of the prompt is the last token's, {prompt.tuco:.3f}."
)
if "cumulative" in scores.columns and len(prompt.cumulative):
    figure = go.Figure(go.Scatter(y=list(prompt.cumulative), mode="lines+markers"))
    figure.update_layout(
        title="TuCo of the partial sums up to each layer",
        xaxis=dict(title="layer", dtick=1),
        yaxis_title="TuCo",
        height=280,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    st.plotly_chart(figure, key="tuco_cumulative")

st.subheader("Alpha-scaled generations")
try:
    alphas = run.json(run.tuco / "alpha_refusals.json", TUCO)
except MissingPiece as error:
    st.warning(str(error))
else:
    st.caption(
        "x_{l+1} = x_l + PTC_l + alpha FTC_l: alpha = 0 is the base model's computation on "
        "the chat stream, 1 the chat model, > 1 amplifies fine-tuning."
    )
    rates = pd.DataFrame([{"alpha": a["alpha"], "refusal_rate": a["refusal_rate"]} for a in alphas])
    figure = go.Figure(go.Scatter(x=rates.alpha, y=rates.refusal_rate, mode="lines+markers"))
    figure.update_layout(
        title="Refusal rate on harmful prompts",
        xaxis_title="alpha",
        yaxis=dict(title="refusal rate", range=[-0.05, 1.05]),
        height=280,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    st.plotly_chart(figure, key="tuco_refusal")
    prompts = [c["prompt"] for c in alphas[0]["completions"]] if alphas else []
    if prompts:
        which = st.selectbox(
            "Harmful prompt",
            range(len(prompts)),
            format_func=lambda i: prompts[i][:100],
            key="tuco_alpha_prompt",
        )
        for column, entry in zip(st.columns(len(alphas)), alphas, strict=True):
            completion = entry["completions"][which]
            with column:
                st.markdown(f"**alpha = {entry['alpha']}**")
                st.caption("refusal" if completion["refusal"] else "no refusal")
                st.text(completion["completion"])
