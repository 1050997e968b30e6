"""Compare: token-level base-vs-chat divergence on the chat model's own responses (URIAL, Lin et
al. 2023): at each response token, KL(P_chat || P_base) and the rank of the chat model's token
under the base model (unshifted = 1, marginal = 2-3, shifted = more). Precomputed prompts from
token_shift.parquet, or any prompt live."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import live
from app.render import SHIFT_COLORS, token_html
from app.run_folder import ANALYZE, current_dictionary, current_run, load_or_stop

SHIFT_COLUMNS = ("prompt_id", "position", "token", "kl", "rank_under_base", "shift")


def show_shift(rows: pd.DataFrame, key: str) -> None:
    """The response tokens shaded by KL and outlined by shift class, and the class counts."""
    rows = rows.sort_values("position")
    scale = max(float(rows.kl.max()), 1e-9)
    st.markdown(
        token_html(
            list(rows.token),
            list(rows.kl),
            scale,
            outlined=[s != "unshifted" for s in rows["shift"]],
            outline_colors=[SHIFT_COLORS.get(s, "#000") for s in rows["shift"]],
        ),
        unsafe_allow_html=True,
    )
    legend = " · ".join(
        f"<span style='color:{c}'>■</span> {name}"
        for name, c in SHIFT_COLORS.items()
        if name != "unshifted"
    )
    st.markdown(
        f"shade = KL(P_chat ‖ P_base) (max {scale:.3g}); outline: {legend}", unsafe_allow_html=True
    )
    counts = rows["shift"].value_counts()
    figure = go.Figure(
        go.Bar(
            x=list(SHIFT_COLORS),
            y=[int(counts.get(s, 0)) for s in SHIFT_COLORS],
            marker_color=list(SHIFT_COLORS.values()),
        )
    )
    figure.update_layout(
        title="Tokens per shift class", height=260, margin=dict(l=40, r=10, t=40, b=30)
    )
    left, right = st.columns([1, 2])
    left.plotly_chart(figure, key=f"{key}_classes")
    right.dataframe(
        rows[[c for c in SHIFT_COLUMNS if c != "prompt_id"]], hide_index=True, height=260
    )


st.title("Compare base and chat, token by token")
run = load_or_stop(current_run)
dictionary = load_or_stop(current_dictionary, run)
shift = load_or_stop(
    run.parquet, run.analysis(dictionary) / "token_shift.parquet", ANALYZE, SHIFT_COLUMNS
)

st.subheader("Stored responses")
prompt_ids = sorted(shift.prompt_id.unique())
summary = shift.groupby("prompt_id").agg(tokens=("kl", "size"), mean_kl=("kl", "mean"))
texts = shift.groupby("prompt_id").prompt.first() if "prompt" in shift.columns else None
prompt_id = st.selectbox(
    "Prompt",
    prompt_ids,
    key="compare_prompt",
    format_func=lambda p: (
        f"{texts[p][:80] if texts is not None else f'prompt {p}'} ({summary.tokens[p]} response "
        f"tokens, mean KL {summary.mean_kl[p]:.3f})"
    ),
)
show_shift(shift[shift.prompt_id == prompt_id], "stored")

st.subheader("Live")
info = load_or_stop(run.info)
text = st.text_input(
    "Prompt (the chat model answers it greedily)",
    "What is the capital of France?",
    key="compare_live_prompt",
)
max_new_tokens = st.number_input("New tokens", 1, 200, 30, key="compare_live_tokens")
if st.button("Compare live", key="compare_live_button"):
    if not info.get("base") or not info.get("chat"):
        st.error(
            f"no base/chat model specs in {run.root}: run.json, the cache manifest or a step's "
            "config.json must name them"
        )
        st.stop()
    pair = live.guarded(
        f"the models {info.get('base')!r} / {info.get('chat')!r}",
        live.model_pair,
        str(info.get("base")),
        str(info.get("chat")),
    )
    if pair is not None:
        show_shift(live.token_shift(pair, text, int(max_new_tokens)), "live")
