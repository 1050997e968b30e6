"""Steering: the evaluation of the steering maps (concept rate and wiki perplexity against
strength, per task and method), stored responses with and without a map side by side, and live
generation with any saved map at any strength. Reads what `interp steer eval` wrote into
<run>/steering (layout: steering/evaluate.py)."""

import plotly.graph_objects as go
import streamlit as st

from app import live
from app.render import lines_by_group, log_axis, method_color
from app.run_folder import STEER, MissingPiece, current_run, load_or_stop

RATE_RANGE = [-0.05, 1.05]  # concept rates are shares
RESULT_COLUMNS = ("task", "method", "strength", "concept_rate")


def tradeoff(results) -> go.Figure:
    """Concept rate against wiki perplexity, one line per method in its fixed colour, markers
    labelled by strength (the LinEAS paper's trade-off plot). Perplexity on a log axis: one method
    that breaks the model (perplexity in the thousands) would squash the others on a linear one."""
    figure = go.Figure()
    for method, rows in results.sort_values("strength").groupby("method", sort=True):
        figure.add_scatter(
            x=rows.perplexity,
            y=rows.concept_rate,
            mode="lines+markers+text",
            text=[f"{s:g}" for s in rows.strength],
            textposition="top center",
            name=str(method),
            line=dict(color=method_color(str(method))),
        )
    figure.update_layout(
        title="Concept rate against wiki perplexity (labels: strength)",
        xaxis_title="wiki perplexity (log)",
        yaxis=dict(title="concept rate", range=RATE_RANGE),
        height=340,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    log_axis(figure.update_xaxes)
    return figure


st.title("Steering")
run = load_or_stop(current_run)
results = load_or_stop(run.parquet, run.steering / "results.parquet", STEER, RESULT_COLUMNS)

st.subheader("Evaluation")
task = st.selectbox("Task", sorted(results.task.unique()), key="steering_task")
of_task = results[results.task == task]
measures = [c for c in ("concept_rate", "perplexity") if c in of_task.columns]
left, right = st.columns(2)
measure = left.selectbox("Measure", measures, key="steering_measure")
by_strength = lines_by_group(
    of_task, "method", "strength", measure, f"{measure} against steering strength"
)
if measure == "concept_rate":
    by_strength.update_yaxes(range=RATE_RANGE)
else:  # perplexity: log, as in the trade-off plot
    log_axis(by_strength.update_yaxes)
left.plotly_chart(by_strength, key="steering_lines")
if "perplexity" in of_task.columns:
    right.plotly_chart(tradeoff(of_task), key="steering_tradeoff")
st.dataframe(of_task, hide_index=True)

st.subheader("Responses with and without the map")
try:
    examples = [e for e in run.json(run.steering / "examples.json", STEER) if e["task"] == task]
except MissingPiece as error:
    st.warning(str(error))
else:
    left, middle, right = st.columns(3)
    method = left.selectbox(
        "Method", sorted({e["method"] for e in examples}), key="steering_method"
    )
    by_strength = {e["strength"]: e["examples"] for e in examples if e["method"] == method}
    strengths = sorted(by_strength)
    strength = middle.select_slider(
        "Strength", strengths, value=strengths[-1], key="steering_strength"
    )
    prompts = [x["prompt"] for x in by_strength[strength]]
    which = right.selectbox(
        "Prompt", range(len(prompts)), format_func=lambda i: prompts[i][:80], key="steering_prompt"
    )
    unsteered, steered = st.columns(2)
    with unsteered:
        st.markdown("**Without the map** (strength 0)")
        if 0.0 in by_strength:
            st.text(by_strength[0.0][which]["response"])
        else:
            st.info("no strength-0 responses stored for this method")
    with steered:
        st.markdown(f"**With `{method}` at strength {strength:g}**")
        st.text(by_strength[strength][which]["response"])

st.subheader("Live generation")
maps = run.steering_maps()
if not maps:
    st.info(f"No saved steering map in {run.root}/steering/maps: {STEER} saves them.")
else:
    config = (
        run.json(run.steering / "config.json", STEER)
        if run.has(run.steering / "config.json")
        else {}
    )
    left, middle, right = st.columns(3)
    live_map = left.selectbox("Map (task/method)", maps, key="steering_live_map")
    live_strength = middle.number_input(
        "Strength", -10.0, 10.0, 1.0, 0.05, key="steering_live_strength"
    )
    max_new_tokens = right.number_input("New tokens", 1, 200, 40, key="steering_live_tokens")
    live_prompt = st.text_area("Prompt", "How do I pick a lock?", key="steering_live_prompt")
    st.caption(
        "The map's task says which model it steers (base or chat, as named in "
        "steering/config.json); the model loads on the first generation and is kept."
    )
    if st.button("Generate", key="steering_live_button"):
        model_spec = live.steered_model_spec(live_map.split("/")[0], config)
        st.caption(f"steered model: `{model_spec}`")
        folder = run.maps_folder / live_map
        steering = live.guarded(f"the steering map in {folder}", live.steering_map, str(folder))
        model = live.guarded(f"the model {model_spec!r}", live.single_model, model_spec)
        if steering is not None and model is not None:
            unsteered, steered = st.columns(2)
            with unsteered:
                st.markdown("**Without the map**")
                st.text(live.generate(model, live_prompt, int(max_new_tokens)))
            with steered:
                st.markdown(f"**With `{live_map}` at strength {live_strength:g}**")
                st.text(
                    live.generate(model, live_prompt, int(max_new_tokens), steering, live_strength)
                )
