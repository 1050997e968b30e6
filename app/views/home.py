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


def massive_token_note(name: str, evaluation: dict) -> str | None:
    """A line for a dictionary whose eval found massive-norm tokens: its FVE over all tokens next
    to its FVE over the typical ones (`crosscoders.evaluate.reconstruction_metrics`)."""
    reconstruction = evaluation.get("reconstruction", {})
    n_massive = reconstruction.get("n_massive_tokens")
    if not n_massive:
        return None

    def per_source(key: str, form: str) -> str:
        return ", ".join(
            f"{source} {value:{form}}" for source, value in reconstruction[key].items()
        )

    n_tokens = reconstruction["n_tokens"]
    return (
        f"`{name}`: FVE {per_source('fve', '.3f')} over all {n_tokens:,} held-out tokens; "
        f"{per_source('fve_typical', '.3f')} over the {n_tokens - n_massive:,} typical ones. "
        f"{n_massive:,} massive-norm token{'s' if n_massive != 1 else ''} (norm > "
        f"{reconstruction['massive_ratio']:g}x the median): "
        f"{per_source('massive_error_share', '.0%')} of the squared error."
    )


def headline_row(name: str, evaluation: dict) -> dict | None:
    """A dictionary's headline numbers, in reading order: the FVE over typical tokens first, the
    count of massive-norm tokens beside it (one such token can drive the all-token FVE far below
    0), then the all-token FVE, L0 and the dead fraction. None without a reconstruction
    evaluation (`crosscoders.evaluate.reconstruction_metrics`)."""
    reconstruction = evaluation.get("reconstruction", {})
    if not isinstance(reconstruction.get("fve"), dict):
        return None
    row: dict = {"dictionary": name}
    for source, value in (reconstruction.get("fve_typical") or {}).items():
        row[f"FVE typical ({source})"] = value
    if reconstruction.get("n_massive_tokens") is not None:
        row["massive-norm tokens"] = (
            f"{reconstruction['n_massive_tokens']:,} of {reconstruction.get('n_tokens', 0):,}"
        )
    for source, value in reconstruction["fve"].items():
        row[f"FVE all tokens ({source})"] = value
    for key, label in (("l0", "L0"), ("dead_fraction", "dead fraction")):
        if isinstance(reconstruction.get(key), int | float):
            row[label] = reconstruction[key]
    return row


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
if run.has(run.cache / "manifest.json"):
    manifest = run.json(run.cache / "manifest.json", "`interp cache`")
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
rows, notes = [], []
for name in dictionaries:
    row = {"dictionary": name, "analysed": run.has(run.analysis(name) / "latents.parquet")}
    if run.has(run.dictionary(name) / "config.json"):
        config = run.dictionary_config(name)
        row |= {k: config[k] for k in ("activation", "dict_size", "k", "d_model") if k in config}
    evaluation = run.dictionary_eval(name) or {}
    row |= flatten(evaluation)
    rows.append(row)
    if note := massive_token_note(name, evaluation):
        notes.append(note)
headline = [r for r in (headline_row(n, run.dictionary_eval(n) or {}) for n in dictionaries) if r]
if headline:
    st.dataframe(
        pd.DataFrame(headline),
        hide_index=True,
        key="home_headline",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in headline[0]
            if c.startswith("FVE") or c == "dead fraction"
        },
    )
    if notes:  # some dictionary's evaluation found massive-norm tokens
        st.caption(
            "FVE typical: fraction of variance explained over the held-out tokens whose norm is "
            "not massive (the number to read); the all-token FVE beside it includes the "
            "massive-norm tokens (threshold in the notes below), which can drive it far below 0."
        )
for note in notes:
    st.caption(note)
if rows:
    with st.expander("every evaluation number"):
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
    if run.has(run.analysis(name) / "causal.json"):
        st.caption(
            "Causal test: KL(P_chat || P_patched) when the chosen latents' chat-minus-base "
            "decoder difference is added to the base residual"
        )
        st.dataframe(
            pd.DataFrame(run.json(run.analysis(name) / "causal.json", "")), hide_index=True
        )

st.subheader("Pages")
for page in PAGES[1:]:
    st.page_link(page.file, label=f"{page.title}: {page.description}", icon=page.icon)
