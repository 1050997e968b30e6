"""The app's state in the URL: the run folder, the dictionary, the page (the URL path), the latent
and the Latents page's filters live in the query string (`st.query_params`), so that a copied
link opens exactly what was shared.

A widget keeps its value in session state under its key; `from_url` copies a query value into that
key before the widget is drawn (once per distinct URL value, so that the widget's own changes are
not overwritten on the next rerun), and `to_url` writes the widget's value back after it is drawn
(default values are left out of the URL, so that links stay short). The parsing is pure
(`parse_*`, `format_*`), tested by hand.
"""

from collections.abc import Callable
from typing import Any

import streamlit as st

RUN_QUERY = "run"
DICTIONARY_QUERY = "dictionary"
APPLIED = "_url_applied"  # session state: the query value last applied or written, per query key


def parse_range(text: str) -> tuple[float, float]:
    """ "0.1,0.9" -> (0.1, 0.9); raises ValueError on anything else or a reversed range."""
    low, high = (float(part) for part in text.split(","))
    if low > high:
        raise ValueError(f"reversed range {text!r}")
    return low, high


def format_range(value: tuple[float, float]) -> str:
    return f"{value[0]:g},{value[1]:g}"


def parse_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def format_list(value: list[str]) -> str:
    return ",".join(value)


def parse_bool(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {text!r}")
    return text == "1"


def format_bool(value: bool) -> str:
    return "1" if value else "0"


def from_url(
    query: str,
    key: str,
    parse: Callable[[str], Any],
    valid: Callable[[Any], bool] = lambda value: True,
) -> None:
    """Before the widget `key` is drawn: put the URL's `query` value, parsed, into its session
    state when the URL carries a value not applied yet, or the widget has no state (call it before
    `with_defaults`). A value that does not parse or is not
    `valid` is ignored (the widget keeps its own)."""
    raw = st.query_params.get(query)
    applied = st.session_state.setdefault(APPLIED, {})
    # a widget's state is dropped when a page without it runs: the URL then fills it again
    if raw is None or (applied.get(query) == raw and key in st.session_state):
        return
    applied[query] = raw
    try:
        value = parse(raw)
    except ValueError:
        return
    if valid(value):
        st.session_state[key] = value


def to_url(query: str, value: Any, default: Any, format: Callable[[Any], str] = str) -> None:
    """After the widget is drawn: its value in the URL (removed when it equals `default`)."""
    applied = st.session_state.setdefault(APPLIED, {})
    if value == default:
        if query in st.query_params:
            del st.query_params[query]
        applied.pop(query, None)
        return
    raw = format(value)
    applied[query] = raw
    if st.query_params.get(query) != raw:
        st.query_params[query] = raw


def with_defaults(key: str, default: Any) -> None:
    """Give a widget its default through session state (a widget given both a default and a
    session-state value warns), after `from_url` and before the widget."""
    if key not in st.session_state:
        st.session_state[key] = default
