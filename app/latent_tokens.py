"""Top activating tokens per latent: the token at the peak (`max_index`) of each stored top example
(examples.parquet, kind "top"), counted per latent, most frequent first (ties: the larger peak
activation first). One pass over the examples table, vectorised, cached per file version; the
Latents table shows them as a column and the Latent page as a list."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import streamlit as st

from app.render import visible_whitespace

TOP_TOKEN_COLUMNS = ("latent", "kind", "activation", "max_index", "token_ids")


def peak_tokens(examples) -> pd.DataFrame:
    """(latent, token_id, activation) of every top example's peak token; `examples` is a pyarrow
    table with TOP_TOKEN_COLUMNS."""
    top = examples.filter(pc.equal(examples.column("kind"), "top"))
    token_ids = top.column("token_ids").combine_chunks()
    offsets = token_ids.offsets.to_numpy()[:-1]
    flat = token_ids.values.to_numpy(zero_copy_only=False)
    peak = offsets + top.column("max_index").to_numpy().astype(np.int64)
    return pd.DataFrame(
        {
            "latent": top.column("latent").to_numpy(),
            "token_id": flat[peak],
            "activation": top.column("activation").to_numpy(),
        }
    )


def top_tokens_table(peaks: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """Per latent and token: how many top examples peak on it and the largest such activation;
    the `n` most frequent tokens of each latent, in that order."""
    counted = (
        peaks.groupby(["latent", "token_id"], sort=False)
        .agg(count=("activation", "size"), activation=("activation", "max"))
        .reset_index()
        .sort_values(["latent", "count", "activation"], ascending=[True, False, False])
    )
    return counted.groupby("latent", sort=False).head(n).reset_index(drop=True)


def label_tokens(table: pd.DataFrame, token_strings: dict[int, str]) -> pd.Series:
    """latent -> "·sorry ×4, ·cannot ×2" (whitespace visible, as in the token highlighting)."""
    labels = [
        f"{visible_whitespace(token_strings.get(int(t), f'<{int(t)}>'))} ×{int(c)}"
        for t, c in zip(table.token_id, table["count"], strict=True)
    ]
    return pd.Series(labels, index=table.latent).groupby(level=0, sort=False).agg(", ".join)


@st.cache_resource(show_spinner=False, max_entries=4)
def _top_tokens(path: str, stamp: tuple[int, int], n: int) -> pd.DataFrame:
    return top_tokens_table(peak_tokens(pq.read_table(path, columns=list(TOP_TOKEN_COLUMNS))), n)


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def top_tokens(examples_path: Path, n: int = 3) -> pd.DataFrame:
    """`top_tokens_table` of an examples.parquet, cached by (path, mtime, size)."""
    return _top_tokens(str(examples_path), _stamp(examples_path), n)


@st.cache_resource(show_spinner=False, max_entries=4)
def _labels(
    path: str, stamp: tuple[int, int], strings: str, strings_stamp: tuple[int, int], n: int
) -> pd.Series:
    import json

    token_strings = {
        int(k): v for k, v in json.loads(Path(strings).read_text())["token_strings"].items()
    }
    return label_tokens(_top_tokens(path, stamp, n), token_strings)


def top_token_labels(examples_path: Path, tokens_path: Path, n: int = 3) -> pd.Series:
    """latent -> its top tokens as one string (`label_tokens`), cached by both files' versions."""
    return _labels(
        str(examples_path), _stamp(examples_path), str(tokens_path), _stamp(tokens_path), n
    )
