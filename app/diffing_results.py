"""Readers and tables of the known-answer diffing outputs, for the app's "Known answers" page:
`interp evaluate-diffing` (RUN/diffing.json: the score table), and per organism run folder
(RUN/<organism>/, or the run folder itself) `interp adl` (adl/), `interp diff-sae` (diff-sae/),
`interp change-profile` (change_profile/profile.json). The files are read by their writers' own
readers (`crosscoders.diffing.adl.read_results`, `difference_sae.read_top_latents`), cached by the
files' (mtime, size); the tables below are pure, tested by hand."""

import json
import math
from pathlib import Path

import pandas as pd
import streamlit as st

from app.render import visible_whitespace
from interp.run_folder import RunFolder

ADL = "`interp adl --out RUN/adl`"
DIFF_SAE = "`interp diff-sae RUN`"
CHANGE_PROFILE = "`interp change-profile RUN`"
EVALUATE = "`interp evaluate-diffing PROFILE`"
MARKERS = {  # a folder holds a method's results when it has this file (relative to it)
    "adl": RunFolder(Path()).adl / "config.json",
    "diff-sae": RunFolder(Path()).diff_sae / "top_latents.json",
    "change_profile": RunFolder(Path()).change_profile / "profile.json",
}


def organism_folders(root: Path) -> list[str]:
    """The folders holding diffing results: "" (the run folder itself) and each subfolder (an
    organism of `interp evaluate-diffing`) with any of MARKERS."""

    def holds(folder: Path) -> bool:
        return any((folder / marker).is_file() for marker in MARKERS.values())

    found = [""] if holds(root) else []
    if root.is_dir():
        found += sorted(p.name for p in root.iterdir() if p.is_dir() and holds(p))
    return found


def _stamp(folder: Path) -> tuple:
    return tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.glob("*.json"))
        if p.is_file()
    )


@st.cache_data(show_spinner=False, max_entries=16)
def _adl(folder: str, stamp: tuple) -> dict:
    from crosscoders.diffing.adl import read_results

    return read_results(Path(folder))


@st.cache_data(show_spinner=False, max_entries=16)
def _top_latents(folder: str, stamp: tuple) -> list[dict]:
    from crosscoders.diffing.difference_sae import read_top_latents

    return read_top_latents(Path(folder))


@st.cache_data(show_spinner=False, max_entries=16)
def _json(path: str, stamp: tuple) -> dict:
    return json.loads(Path(path).read_text())


def adl_results(folder: Path) -> dict:
    """`read_results` of an ADL folder (raises InterpError naming what is missing)."""
    return _adl(str(folder), _stamp(folder) if folder.is_dir() else ())


def top_latents(folder: Path) -> list[dict]:
    return _top_latents(str(folder), _stamp(folder) if folder.is_dir() else ())


def read_json(path: Path) -> dict:
    return _json(str(path), _stamp(path.parent))


# --- tables (pure) -----------------------------------------------------------------------------


def tokens_text(tokens: list[str], n: int) -> str:
    return "  ".join(visible_whitespace(t) for t in tokens[:n])


def logit_lens_table(rows: list[dict], position: int, sign: str, n: int = 10) -> pd.DataFrame:
    """ADL logit lens: one row per layer, its top `n` tokens at one position and sign."""
    chosen = sorted(
        (r for r in rows if r["position"] == position and r["sign"] == sign),
        key=lambda r: r["layer"],
    )
    return pd.DataFrame(
        {
            "layer": [r["layer"] for r in chosen],
            "top tokens": [tokens_text(r["tokens"], n) for r in chosen],
            "top probability": [r["probs"][0] if r["probs"] else math.nan for r in chosen],
        }
    )


def adl_steering_table(rows: list[dict]) -> pd.DataFrame:
    """One row per steering reading of steering.json: method (adl / tuco), model, position,
    strength (alpha for TuCo), mean NLL of its generations under the unsteered model and the
    perplexity exp(mean NLL)."""
    table = []
    for index, row in enumerate(rows):
        nll = [v for v in row.get("nll", []) if v is not None and math.isfinite(v)]
        mean_nll = sum(nll) / len(nll) if nll else math.nan
        table.append(
            {
                "reading": index,
                "method": row["method"],
                "model": row.get("model", "chat"),
                "position": row.get("position"),
                "strength": row.get("strength", row.get("alpha")),
                "mean_nll": mean_nll,
                "perplexity": math.exp(mean_nll) if math.isfinite(mean_nll) else math.nan,
            }
        )
    return pd.DataFrame(table)


def score_table(payload: dict) -> pd.DataFrame:
    """diffing.json's cells as one row per organism x method: the score (planted tokens among
    the top 20, or the share of steered generations mentioning the domain), recovered or not,
    and where the number comes from."""
    rows = []
    for cell in payload.get("cells", []):
        kind = cell.get("kind")
        if kind == "tokens":
            score = cell.get("planted")
        elif kind == "steering":
            score = cell.get("share")
        else:
            score = None
        recovered = cell.get("recovered")  # MethodScore.recovered, as written
        rows.append(
            {
                "organism": cell.get("organism"),
                "method": cell.get("method"),
                "kind": kind,
                "score": score,
                "recovered": recovered,
                "hits": ", ".join(cell.get("hits") or []),
                "detail": cell.get("detail", ""),
            }
        )
    return pd.DataFrame(
        rows, columns=["organism", "method", "kind", "score", "recovered", "hits", "detail"]
    )


def profile_table(payload: dict, source: str) -> pd.DataFrame:
    """change_profile/profile.json's rows of one source ("pass" or "cache") with tokens."""
    rows = payload.get(source, {}).get("rows", [])
    return pd.DataFrame([r for r in rows if r.get("n_tokens")])
