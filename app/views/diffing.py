"""Known answers: the diffing methods on organisms whose fine-tune planted a known domain. The score
table of `interp evaluate-diffing` (RUN/diffing.json), and per organism (a subfolder of the run
folder, or the run folder itself; chosen in the selector, kept in the URL as `?organism=`) the
Activation Difference Lens (tokens per layer, patchscope, steering samples with their
perplexity), the difference SAE's top latents and the change profile. Layouts:
crosscoders/diffing/{adl, difference_sae, change_profile, evaluate_diffing}.py."""

import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app.diffing_results import (
    ADL,
    CHANGE_PROFILE,
    DIFF_SAE,
    EVALUATE,
    adl_results,
    adl_steering_table,
    logit_lens_table,
    organism_folders,
    profile_table,
    read_json,
    score_table,
    tokens_text,
    top_latents,
)
from app.render import density_histogram, log_axis, method_color
from app.run_folder import current_run, load_or_stop
from app.url_state import from_url, to_url, with_defaults
from interp.errors import InterpError
from interp.run_folder import RunFolder

ORGANISM_KEY = "diffing_organism"
SECTION_KEY = "diffing_section"
SECTIONS = ("ADL", "Difference SAE", "Change profile")
PROFILE_COLORS = {
    "wiki": "#1f77b4",
    "template": "#d62728",
    "prompt": "#2ca02c",
    "response": "#ff7f0e",
}


def score_chart(table) -> go.Figure:
    """Per organism and method the score, bars in the method's colour (tokens: planted tokens
    among the top 20; steering: share of generations mentioning the domain)."""
    figure = go.Figure()
    for method, rows in table.dropna(subset=["score"]).groupby("method", sort=False):
        figure.add_bar(
            x=rows.organism, y=rows.score, name=str(method), marker_color=method_color(method)
        )
    figure.update_layout(
        title="Score per organism and method (tokens: planted of the top 20; steering: share)",
        barmode="group",
        height=320,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    return figure


st.title("Diffing methods with known answers")
run = load_or_stop(current_run)

st.subheader("Score table")
if run.has("diffing.json"):
    payload = read_json(run.root / "diffing.json")
    scores = score_table(payload)
    organisms = {o["name"]: o for o in payload.get("organisms", [])}
    for name, organism in organisms.items():
        st.caption(
            f"**{name}**: `{organism.get('base')}` -> `{organism.get('chat')}`. "
            f"{organism.get('description', '')} Planted vocabulary: "
            + ", ".join(organism.get("vocabulary", []))
        )
    st.plotly_chart(score_chart(scores), key="diffing_scores")
    st.dataframe(scores, hide_index=True)
    st.caption(
        "recovered: >= 3 planted tokens among a method's top 20 tokens, or >= 50% of steered "
        "generations on neutral prompts mention the domain (crosscoders/diffing/score.py)."
    )
else:
    st.info(
        f"No score table: {run.root}/diffing.json is missing. {EVALUATE} runs every method on "
        "every organism of a science profile (data/pipelines/science.toml) and writes it; the "
        "sections below show any single method's results already in this folder."
    )

folders = organism_folders(run.root)
if not folders:
    st.info(
        f"No diffing results in {run.root} or its subfolders: {ADL}, {DIFF_SAE} and "
        f"{CHANGE_PROFILE} write adl/, diff-sae/ and change_profile/ into a run folder "
        f"({EVALUATE} does it per organism)."
    )
    st.stop()
from_url("organism", ORGANISM_KEY, str, valid=folders.__contains__)
with_defaults(ORGANISM_KEY, folders[0])
if st.session_state[ORGANISM_KEY] not in folders:
    st.session_state[ORGANISM_KEY] = folders[0]
organism = st.selectbox(
    "Organism / run",
    folders,
    key=ORGANISM_KEY,
    format_func=lambda f: f or f"this run folder ({run.root.name})",
)
to_url("organism", organism, folders[0])
folder = run.root / organism if organism else run.root
layout = RunFolder(folder)

from_url("section", SECTION_KEY, str, valid=SECTIONS.__contains__)
with_defaults(SECTION_KEY, SECTIONS[0])
# one section per script run (tabs would run and send all three, every rerun)
section = st.segmented_control("Method", SECTIONS, key=SECTION_KEY) or SECTIONS[0]
to_url("section", section, SECTIONS[0])

if section == "ADL":
    try:
        adl = adl_results(layout.adl)
    except InterpError as error:
        st.info(f"{error}. {ADL} writes the Activation Difference Lens here.")
    else:
        summary, config = adl["summary"], adl["config"]
        layer = summary["layer"]
        st.caption(
            f"delta_(l,j) = mean over {summary.get('n_texts', '?')} unrelated texts of "
            f"h_chat - h_base at position j of `resid_post[l]`; models `{config.get('base')}` -> "
            f"`{config.get('chat')}`; patchscope and steering at layer {layer}."
        )
        left, middle = st.columns(2)
        position = left.selectbox(
            "Position j", range(int(summary["positions"])), key="adl_position"
        )
        sign = middle.radio("Sign", ("+", "-"), horizontal=True, key="adl_sign")
        st.markdown("**Logit lens of ±delta, per layer** (the fine-tuned model's unembedding)")
        st.dataframe(
            logit_lens_table(adl["logit_lens"], position, sign), hide_index=True, height=300
        )
        relative = np.asarray(summary["relative_norm"], dtype=float)
        figure = go.Figure(
            go.Heatmap(z=relative, x=list(range(relative.shape[1])), colorscale="Oranges")
        )
        figure.update_layout(
            title="||delta|| / mean ||h_base||, per layer (rows) and position (columns)",
            xaxis_title="position j",
            yaxis_title="layer",
            height=300,
            margin=dict(l=40, r=10, t=40, b=40),
        )
        st.plotly_chart(figure, key="adl_norms")
        scope = [r for r in adl["patchscope"] if r["position"] == position]
        if scope:
            st.markdown(f"**Patchscope at layer {layer}, position {position}**")
            st.dataframe(
                {
                    "scale": [r["scale"] for r in scope],
                    "top tokens": [tokens_text(r.get("tokens", []), 10) for r in scope],
                },
                hide_index=True,
            )
        st.markdown("**Steering samples** (neutral prompts, greedy)")
        readings = adl_steering_table(adl["steering"])
        figure = go.Figure()
        for (method, model), rows in readings.dropna(subset=["strength"]).groupby(
            ["method", "model"], sort=False
        ):
            figure.add_scatter(
                x=rows.strength,
                y=rows.perplexity,
                mode="markers",
                name=f"{method} ({model})",
                marker=dict(
                    color=method_color(method), symbol="circle" if model == "chat" else "diamond"
                ),
                text=[f"position {p}" for p in rows.position],
            )
        figure.update_layout(
            title="Perplexity of the generations under the unsteered model (log)",
            xaxis_title="strength (x typical norm; TuCo: alpha)",
            yaxis_title="perplexity = exp(mean NLL)",
            height=320,
            margin=dict(l=40, r=10, t=40, b=40),
        )
        log_axis(figure.update_yaxes)
        st.plotly_chart(figure, key="adl_perplexity")
        labels = [
            f"{r.method} · {r.model} · position {r.position} · strength {r.strength} · "
            f"perplexity {r.perplexity:.3g}"
            if r.method == "adl"
            else f"{r.method} · alpha {r.strength} · perplexity {r.perplexity:.3g}"
            for r in readings.itertuples()
        ]
        chosen = st.selectbox(
            "Reading", range(len(labels)), format_func=labels.__getitem__, key="adl_reading"
        )
        row = adl["steering"][chosen]
        for prompt, completion, nll in zip(
            row["prompts"], row["completions"], row["nll"], strict=False
        ):
            ppl = f"{math.exp(nll):.3g}" if nll is not None and math.isfinite(nll) else "?"
            st.markdown(f"*{prompt}* (perplexity {ppl})")
            st.text(completion)

elif section == "Difference SAE":
    try:
        latents = top_latents(layout.diff_sae)
    except InterpError as error:
        st.info(f"{error}. {DIFF_SAE} trains and reads a difference SAE on RUN/cache.")
    else:
        if (layout.diff_sae / "latents.parquet").is_file():
            table = run.parquet(run.relative(layout.diff_sae / "latents.parquet"), DIFF_SAE)
            density, n_dead = density_histogram(table.freq.to_numpy())
            st.plotly_chart(density, key="diff_sae_density")
        st.caption(
            "Top latents of the SAE on h_chat - h_base by mean activation over the cache; "
            "logit tokens: the decoder direction through the fine-tuned model's unembedding."
        )
        st.dataframe(
            {
                "latent": [r["latent"] for r in latents],
                "freq": [r["freq"] for r in latents],
                "mean_act": [r["mean_act"] for r in latents],
                "max_act": [r["max_act"] for r in latents],
                "logit tokens": [tokens_text(r["logit_tokens"], 10) for r in latents],
                "example tokens": [tokens_text(r["example_tokens"], 10) for r in latents],
            },
            hide_index=True,
            height=320,
        )
        if latents:
            which = st.selectbox(
                "Latent",
                range(len(latents)),
                format_func=lambda i: f"latent {latents[i]['latent']}",
                key="diff_sae_latent",
            )
            for example in latents[which]["examples"][:10]:
                st.text(f"{example['activation']:.3g}  {example['text']}")

else:
    path = layout.change_profile / "profile.json"
    if not path.is_file():
        st.info(
            f"{path} is missing: {CHANGE_PROFILE} measures ||h_chat - h_base|| / ||h_base|| per "
            "layer and token class."
        )
    else:
        payload = read_json(path)
        for source, title in (
            ("pass", "every layer (held-out texts and chats)"),
            ("cache", "the cache"),
        ):
            rows = profile_table(payload, source)
            if rows.empty:
                continue
            figure = go.Figure()
            for name, group in rows.groupby("class", sort=False):
                figure.add_scatter(
                    x=group.layer,
                    y=group.relative_norm,
                    mode="lines+markers",
                    name=f"{name} ({int(group.n_tokens.max())} tok)",
                    line=dict(color=PROFILE_COLORS.get(str(name))),
                )
            figure.update_layout(
                title=f"Change profile over {title}: mean ||delta|| / mean ||h_base||",
                xaxis=dict(title="layer", dtick=1),
                yaxis_title="relative norm",
                height=320,
                margin=dict(l=40, r=10, t=40, b=40),
            )
            st.plotly_chart(figure, key=f"profile_{source}")
            st.dataframe(rows, hide_index=True)
