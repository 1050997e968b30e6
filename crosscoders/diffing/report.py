"""report.md, figures/*.png and summary.json of one analysed dictionary, from the files the other
units wrote (never from the cache or the models): the numbers of Minder et al.'s tables (latents
per class, what Latent Scaling says about the chat-only ones, causal KL of latent halves) and
the figures (relative-norm and cosine histograms, nu scatter)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from crosscoders.diffing.latent_scaling import (  # noqa: E402
    CHAT_ONLY_DELTA,
    NU_EPS_THRESHOLD,
    NU_R_THRESHOLD,
)
from crosscoders.diffing.latent_table import LATENTS_FILE, class_counts  # noqa: E402
from interp.fileio import atomic_save_png, atomic_write_json, atomic_write_text  # noqa: E402
from interp.markdown import markdown_table  # noqa: E402
from interp.run_folder import RunFolder  # noqa: E402

CLASS_COLOURS = {
    "base-only": "tab:blue",
    "shared": "tab:gray",
    "chat-only": "tab:red",
    "other": "tab:olive",
}


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def latent_summary(table: pd.DataFrame) -> dict[str, object]:
    """Class counts and the Latent Scaling diagnosis of the chat-only latents."""
    chat_only = table[table["rel_norm"] >= CHAT_ONLY_DELTA]
    measured = chat_only[np.isfinite(chat_only["nu_r"]) & np.isfinite(chat_only["nu_eps"])]
    n_measured = len(measured)
    present_in_base = int((~measured["chat_specific"]).sum())
    return {
        "n_latents": int(len(table)),
        "classes": class_counts(table),
        "dead_fraction_in_analysis": float((table["max_act"] <= 0).mean()),
        "chat_only_with_nu": n_measured,
        "chat_specific": int(table["chat_specific"].sum()),
        "complete_shrinkage": int(table["complete_shrinkage"].sum()),
        "latent_decoupling": int(table["latent_decoupling"].sum()),
        "chat_only_present_in_base_share": present_in_base / n_measured if n_measured else None,
    }


def _finite(values: pd.Series) -> np.ndarray:
    array = values.to_numpy(dtype=float)
    return array[np.isfinite(array)]


def plot_histograms(table: pd.DataFrame, folder: Path) -> list[str]:
    names = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(_finite(table["rel_norm"]), bins=50, range=(0, 1), color="tab:purple")
    for edge in (0.1, 0.4, 0.6, 0.9):
        ax.axvline(edge, color="black", lw=0.6, ls="--")
    ax.set(
        xlabel="relative decoder norm (0 = base-only, 1 = chat-only)",
        ylabel="latents",
        yscale="log",
        title="Relative decoder norm",
    )
    fig.tight_layout()
    atomic_save_png(fig, folder / "rel_norm_hist.png", dpi=110)
    plt.close(fig)
    names.append("rel_norm_hist.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in ("shared", "other", "base-only", "chat-only"):
        values = _finite(table.loc[table["latent_class"] == name, "cosine"])
        if values.size:
            ax.hist(
                values, bins=50, range=(-1, 1), alpha=0.6, label=name, color=CLASS_COLOURS[name]
            )
    ax.set(
        xlabel="cosine(d_base, d_chat)",
        ylabel="latents",
        yscale="log",
        title="Decoder cosine by class",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_png(fig, folder / "cosine_hist.png", dpi=110)
    plt.close(fig)
    names.append("cosine_hist.png")
    return names


def plot_nu_scatter(table: pd.DataFrame, folder: Path) -> str:
    chat_only = table[table["rel_norm"] >= CHAT_ONLY_DELTA]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    finite = np.isfinite(chat_only["nu_r"]) & np.isfinite(chat_only["nu_eps"])
    shown = chat_only[finite]
    colours = np.where(shown["chat_specific"], "tab:red", "tab:gray")
    ax.scatter(shown["nu_eps"], shown["nu_r"], s=8, c=colours)
    ax.axvline(NU_EPS_THRESHOLD, color="black", lw=0.6, ls="--")
    ax.axhline(NU_R_THRESHOLD, color="black", lw=0.6, ls="--")
    ax.set(
        xlabel="nu_eps = beta_eps(base) / beta_eps(chat)",
        ylabel="nu_r = beta_r(base) / beta_r(chat)",
        title=f"Latent Scaling of {len(shown)} chat-only latents (red: chat-specific)",
    )
    fig.tight_layout()
    atomic_save_png(fig, folder / "nu_scatter.png", dpi=110)
    plt.close(fig)
    return "nu_scatter.png"


def write_report(out: Path, dict_name: str, dict_dir: Path) -> dict:
    table = pd.read_parquet(out / LATENTS_FILE)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    images = plot_histograms(table, figures) + [plot_nu_scatter(table, figures)]
    summary: dict[str, object] = {"dictionary": dict_name, **latent_summary(table)}
    dict_config = _read_json(dict_dir / "config.json") or {}
    evaluation = _read_json(dict_dir / "eval.json")
    causal_rows = _read_json(out / "causal.json")
    shift = _read_json(out / "token_shift_summary.json")
    summary.update(
        {
            "activation": dict_config.get("activation"),
            "dict_size": dict_config.get("dict_size"),
            "eval": evaluation,
            "causal": causal_rows,
            "token_shift": shift,
        }
    )
    activation = dict_config.get("activation")
    sparsity = (
        f"mu = {dict_config.get('l1_coefficient')}"
        if activation == "relu_l1"
        else f"k = {dict_config.get('k')}"
    )
    lines = [
        f"# Model-diffing analysis of `{dict_name}`",
        "",
        f"Dictionary: activation `{activation}`, F = {dict_config.get('dict_size')}, {sparsity}.",
        "",
        "## Latent classes (relative decoder norm, 1 = chat-only)",
        "",
        markdown_table([summary["classes"]], ["base-only", "shared", "chat-only", "other"]),
        "",
        "## Latent Scaling of the chat-only latents (Minder et al. 2025)",
        "",
        f"Chat-only latents with defined nu: {summary['chat_only_with_nu']}. Chat-specific "
        f"(nu_eps < {NU_EPS_THRESHOLD} and nu_r < {NU_R_THRESHOLD}): {summary['chat_specific']}; "
        f"Complete Shrinkage (nu_eps >= {NU_EPS_THRESHOLD}): {summary['complete_shrinkage']}; "
        f"Latent Decoupling (nu_r >= {NU_R_THRESHOLD}): {summary['latent_decoupling']}. "
        f"Share of chat-only latents that Latent Scaling finds also in base: "
        f"{summary['chat_only_present_in_base_share']}.",
        "",
    ]
    if evaluation:
        lines += [
            "## Dictionary quality (eval.json)",
            "",
            "```json",
            json.dumps(evaluation, indent=1),
            "```",
            "",
        ]
    if causal_rows:
        lines += [
            "## Causal test: KL(P_chat || P_patched) on held-out chat responses",
            "",
            "h_base + sum_{j in S} f_j (d_j^chat - d_j^base) at the layer, then chat's later "
            "layers (chat_error: h_chat minus the sum over all latents). kl_first_k: the first k "
            "response predictions minus those made at a chat-template control token; kl_rest: "
            "the other response predictions. random_*: as many latents as a half, drawn from the "
            "candidates / from every live latent, pooled over seeds.",
            "",
            markdown_table(
                causal_rows,
                [
                    "latent_set",
                    "n_latents",
                    "kl_first_k",
                    "kl_rest",
                    "kl_first_k_reduction",
                    "kl_rest_reduction",
                    "n_tokens_first_k",
                    "n_tokens_rest",
                ],
            ),
            "",
            f"Candidates: {causal_rows[0].get('candidate_rule')} "
            f"({causal_rows[0].get('n_candidates')} of {causal_rows[0].get('n_live')} live "
            "latents).",
            "",
        ]
    if shift:
        lines += [
            "## Token distribution shift (URIAL)",
            "",
            markdown_table([shift], list(shift)),
            "",
        ]
    top = table[table["chat_specific"]].sort_values("freq", ascending=False).head(10)
    if len(top):
        lines += [
            "## Most frequent chat-specific latents",
            "",
            markdown_table(
                top.to_dict("records"),
                ["latent", "rel_norm", "nu_r", "nu_eps", "freq", "freq_template", "max_act"],
            ),
            "",
        ]
    lines += ["## Figures", ""] + [f"![{name}](figures/{name})" for name in images]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", text)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _causal_reduction(summary: dict, latent_set: str) -> float | None:
    """The first-k KL reduction of a condition vs S = none (the paper's Fig. 4 measure)."""
    rows = {row["latent_set"]: row for row in summary.get("causal") or []}
    return rows[latent_set].get("kl_first_k_reduction") if latent_set in rows else None


def comparison_rows(summaries: list[dict]) -> list[dict[str, object]]:
    """One row per analysed dictionary: the numbers of the L1-vs-BatchTopK comparison."""
    rows = []
    for summary in summaries:
        reconstruction = (summary.get("eval") or {}).get("reconstruction", {})
        fve = reconstruction.get("fve", {})
        typical = reconstruction.get("fve_typical", {})  # massive-norm tokens excluded
        rows.append(
            {
                "dictionary": summary["dictionary"],
                "activation": summary.get("activation"),
                "F": summary.get("dict_size"),
                "fve_base": fve.get("base"),
                "fve_chat": fve.get("chat"),
                "fve_typical_base": typical.get("base"),
                "fve_typical_chat": typical.get("chat"),
                "n_massive_tokens": reconstruction.get("n_massive_tokens"),
                "l0": reconstruction.get("l0"),
                "dead_fraction": reconstruction.get("dead_fraction"),
                **summary["classes"],
                "chat_only_with_nu": summary["chat_only_with_nu"],
                "chat_specific": summary["chat_specific"],
                "complete_shrinkage": summary["complete_shrinkage"],
                "latent_decoupling": summary["latent_decoupling"],
                "chat_only_in_base_share": summary["chat_only_present_in_base_share"],
                "kl_red_all": _causal_reduction(summary, "all"),
                "kl_red_ls_best": _causal_reduction(summary, "latent_scaling_best_half"),
                "kl_red_ls_worst": _causal_reduction(summary, "latent_scaling_worst_half"),
                "kl_red_norm_best": _causal_reduction(summary, "rel_norm_best_half"),
                "kl_red_norm_worst": _causal_reduction(summary, "rel_norm_worst_half"),
                "kl_red_random_candidates": _causal_reduction(summary, "random_candidates"),
                "kl_red_random_latents": _causal_reduction(summary, "random_latents"),
            }
        )
    return rows


def write_comparison(run_dir: Path, dict_names: list[str]) -> Path:
    """analysis/comparison.md: the analysed dictionaries side by side (transposed table)."""
    summaries = []
    for name in dict_names:
        summary = _read_json(RunFolder(run_dir).analysis(name) / "summary.json")
        if summary is None:
            from interp.errors import InterpError

            raise InterpError(
                f"dictionary {name!r} of {str(run_dir)!r} has no analysis/{name}/summary.json: "
                f"run `interp analyze {run_dir} --dict {name}` first"
            )
        summaries.append(summary)
    rows = comparison_rows(summaries)
    columns = ["metric", *dict_names]
    transposed = [
        {"metric": key, **{row["dictionary"]: row[key] for row in rows}}
        for key in rows[0]
        if key != "dictionary"
    ]
    text = (
        "# Dictionaries side by side\n\n"
        "FVE / L0 / dead fraction from each dictionary's eval.json (validation split;\n"
        "fve_typical: massive-norm tokens excluded, see `interp dict eval --massive-ratio`);\n"
        "classes by\n"
        "relative decoder norm; Latent Scaling counts over chat-only latents; kl_red_*: reduction\n"
        "of the first-k KL(P_chat || P_patched) vs S = none when the latent set is patched into\n"
        "base (ls = Latent Scaling rank-sum halves, norm = relative-norm halves).\n\n"
        + markdown_table(transposed, columns)
        + "\n"
    )
    path = RunFolder(run_dir).comparison
    atomic_write_text(path, text)
    return path
