"""Steering: the evaluation of the steering maps (concept rate and perplexity against strength),
stored generations with and without a map side by side, and live generation with any saved map
at any strength. Reads what `interp steer eval` wrote into <run>/steering."""

import streamlit as st

from app import live
from app.render import lines_by_group
from app.run_folder import STEER, MissingPiece, current_run, load_or_stop

st.title("Steering")
run = load_or_stop(current_run)
results = load_or_stop(run.parquet, "steering/results.parquet", STEER, ("method", "strength"))

st.subheader("Evaluation")
measures = [
    c for c in results.columns if c not in ("method", "strength") and results[c].dtype.kind in "fiu"
]
if measures:
    measure = st.selectbox("Measure", measures, key="steering_measure")
    st.plotly_chart(
        lines_by_group(
            results, "method", "strength", measure, f"{measure} against steering strength"
        ),
        key="steering_lines",
    )
st.dataframe(results, hide_index=True)

st.subheader("Generations with and without the map")
try:
    generations = run.parquet(
        "steering/generations.parquet", STEER, ("method", "strength", "prompt", "text")
    )
except MissingPiece as error:
    st.warning(str(error))
else:
    left, middle, right = st.columns(3)
    method = left.selectbox("Map", sorted(generations.method.unique()), key="steering_method")
    of_method = generations[generations.method == method]
    strengths = sorted(of_method.strength.unique())
    strength = middle.select_slider(
        "Strength", strengths, value=strengths[-1], key="steering_strength"
    )
    prompt = right.selectbox("Prompt", sorted(of_method.prompt.unique()), key="steering_prompt")
    rows = of_method[of_method.prompt == prompt].set_index("strength").text
    unsteered, steered = st.columns(2)
    with unsteered:
        st.markdown("**Without the map** (strength 0)")
        if 0 in rows.index:
            st.text(rows.loc[0])
        else:
            st.info("no strength-0 generation stored for this map and prompt")
    with steered:
        st.markdown(f"**With `{method}` at strength {strength}**")
        st.text(rows.loc[strength])

st.subheader("Live generation")
maps = run.steering_maps()
if not maps:
    st.info(f"No saved steering map in {run.root}/steering/maps: {STEER} saves them.")
else:
    config = run.json("steering/config.json", STEER) if run.has("steering/config.json") else {}
    info = run.info() if run.has("run.json") else {}
    model_spec = str(config.get("model") or config.get("chat") or info.get("chat", ""))
    left, middle, right = st.columns(3)
    live_map = left.selectbox("Map", maps, key="steering_live_map")
    live_strength = middle.slider("Strength", 0.0, 1.0, 1.0, 0.05, key="steering_live_strength")
    max_new_tokens = right.number_input("New tokens", 1, 200, 40, key="steering_live_tokens")
    live_prompt = st.text_area("Prompt", "Tell me about your day.", key="steering_live_prompt")
    st.caption(f"model: `{model_spec}` (loaded on the first generation, then kept)")
    if st.button("Generate", key="steering_live_button"):
        folder = run.root / "steering" / "maps" / live_map
        steering = live.guarded(f"the steering map in {folder}", live.steering_map, str(folder))
        model = live.guarded(f"the model {model_spec!r}", live.single_model, model_spec)
        if steering is not None and model is not None:
            unsteered, steered = st.columns(2)
            with unsteered:
                st.markdown("**Without the map**")
                st.text(live.generate(model, live_prompt, int(max_new_tokens)))
            with steered:
                st.markdown(f"**With `{live_map}` at strength {live_strength}**")
                st.text(
                    live.generate(model, live_prompt, int(max_new_tokens), steering, live_strength)
                )
