"""The app's pages: one table used by `main.py` (navigation), Home (links) and the pages that open
each other (`open_latent`)."""

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class PageSpec:
    file: str  # relative to app/main.py
    title: str
    url_path: str
    icon: str
    description: str


PAGES = (
    PageSpec("views/home.py", "Home", "", ":material/home:", "the run's summary"),
    PageSpec(
        "views/latents.py",
        "Latents",
        "latents",
        ":material/table:",
        "every latent: relative norm, cosine, Latent Scaling; filter, sort, click to open",
    ),
    PageSpec(
        "views/latent.py",
        "Latent",
        "latent",
        ":material/search:",
        "one latent: examples, logits, neighbours, live activations",
    ),
    PageSpec(
        "views/search.py",
        "Search",
        "search",
        ":material/manage_search:",
        "type a text: the latents that fire on each token, read from both models",
    ),
    PageSpec(
        "views/tuco.py",
        "TuCo",
        "tuco",
        ":material/tune:",
        "fine-tuning contribution per prompt set, per token, alpha-scaled generations",
    ),
    PageSpec(
        "views/steering.py",
        "Steering",
        "steering",
        ":material/alt_route:",
        "steering maps: results, generations with and without a map",
    ),
    PageSpec(
        "views/compare.py",
        "Compare",
        "compare",
        ":material/compare:",
        "token-level base-vs-chat KL and URIAL shift on prompts",
    ),
    PageSpec(
        "views/outputs.py",
        "Weights and outputs",
        "outputs",
        ":material/stacked_line_chart:",
        "weight spectra and intruder dimensions, generative horizon, amplified generations",
    ),
    PageSpec(
        "views/diffing.py",
        "Known answers",
        "diffing",
        ":material/fact_check:",
        "diffing methods on organisms with a planted answer: score table, ADL, difference SAE, "
        "change profile",
    ),
)
LATENT_PAGE = "views/latent.py"
LATENT_QUERY = "latent"  # ?latent=J opens latent J on the Latent page
KEPT_QUERIES = ("run", "dictionary")  # app/url_state.py: kept when a page opens another


def st_pages() -> list:
    return [
        st.Page(
            p.file, title=p.title, icon=p.icon, url_path=p.url_path or None, default=not p.url_path
        )
        for p in PAGES
    ]


def open_latent(latent: int) -> None:
    """Switch to the Latent page showing `latent` (the run and dictionary stay in the URL)."""
    kept = {k: st.query_params[k] for k in KEPT_QUERIES if k in st.query_params}
    st.switch_page(LATENT_PAGE, query_params=kept | {LATENT_QUERY: str(int(latent))})
