"""Home: the run's summary (models, data, dictionaries and their metrics, steps) and the pages."""

import pandas as pd
import streamlit as st

from app.navigation import PAGES
from app.run_folder import MissingPiece, current_run, load_or_stop


def flatten(data: dict, prefix: str = "") -> dict:
    """{"fve": {"base": 0.8}} -> {"fve.base": 0.8}, for one-row metric tables."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if not isinstance(value, list) else str(value)
    return flat


st.title("Model-diffing run")
run = load_or_stop(current_run)
info = load_or_stop(run.info)
st.caption(f"`{run.root}`")

facts = {
    "Run": info.get("name", run.root.name),
    "Base model": info.get("base", "?"),
    "Chat model": info.get("chat", "?"),
    "Layer (resid_post)": info.get("layer", "?"),
}
for column, (label, value) in zip(st.columns(len(facts)), facts.items(), strict=True):
    column.caption(label)
    column.markdown(f"#### `{value}`")
if "created" in info:
    st.caption(f"created {info['created']}")
if info.get("run_json_missing"):
    st.warning("run.json is missing: this summary is assembled from the steps' own configs.")

st.subheader("Steps")
steps = info.get("steps", {})
if steps:
    st.dataframe(
        pd.DataFrame(
            [
                {"step": name, "folder": folder, "written": (run.root / folder).exists()}
                for name, folder in steps.items()
            ]
        ),
        hide_index=True,
    )
else:
    st.warning("run.json lists no steps yet: no pipeline step has finished in this run.")

st.subheader("Data")
if run.has("cache/manifest.json"):
    manifest = run.json("cache/manifest.json", "`interp cache`")
    shards = manifest.get("shards", [])
    n_tokens = manifest.get("n_tokens") or sum(int(s.get("n_tokens", 0)) for s in shards)
    state = "" if manifest.get("complete", True) else " (incomplete: the caching step is not done)"
    st.write(f"Activation cache: {len(shards)} shards, {n_tokens:,} tokens{state}.")
    if isinstance(manifest.get("dataset"), dict):
        st.json({k: v for k, v in manifest["dataset"].items() if k != "plan_sha256"}, expanded=1)
    # the shard list and the per-dimension statistics are long and say nothing to a reader
    described = {k: v for k, v in manifest.items() if k not in ("shards", "stats", "dataset")}
    with st.expander("cache manifest"):
        st.json(described, expanded=False)
else:
    st.info("No activation cache (cache/manifest.json) in this run.")

st.subheader("Dictionaries")
dictionaries = run.dictionaries()
if not dictionaries:
    st.warning(f"No dictionary in {run.root}/dictionaries: `interp train` writes them.")
rows = []
for name in dictionaries:
    row = {"dictionary": name, "analysed": run.has(f"analysis/{name}/latents.parquet")}
    if run.has(f"dictionaries/{name}/config.json"):
        config = run.dictionary_config(name)
        row |= {k: config[k] for k in ("activation", "dict_size", "k", "d_model") if k in config}
    row |= flatten(run.dictionary_eval(name) or {})
    rows.append(row)
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True)

for name in run.analysed_dictionaries():
    st.subheader(f"Analysis of `{name}`")
    try:
        counts = run.latents(name).latent_class.value_counts()
    except MissingPiece as error:
        st.warning(str(error))
        continue
    columns = st.columns(len(counts) + 1)
    columns[0].metric("latents", f"{int(counts.sum()):,}")
    for column, (latent_class, count) in zip(columns[1:], counts.items(), strict=True):
        column.metric(str(latent_class), f"{int(count):,}")
    if run.has(f"analysis/{name}/causal.json"):
        st.caption(
            "Causal test: KL(P_chat || P_patched) when the chosen latents' chat-minus-base "
            "decoder difference is added to the base residual"
        )
        st.dataframe(pd.DataFrame(run.json(f"analysis/{name}/causal.json", "")), hide_index=True)

st.subheader("Pages")
for page in PAGES[1:]:
    st.page_link(page.file, label=f"{page.title}: {page.description}", icon=page.icon)
