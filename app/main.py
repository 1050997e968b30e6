"""Entry point of the Streamlit app (`interp app RUN_FOLDER` runs `streamlit run app/main.py`).

The sidebar holds the run folder (default: `$INTERP_RUN_FOLDER`, set by `interp app`) and the
dictionary; every page reads them through `app.run_folder`. Both are mirrored in the URL
(`?run=...&dictionary=...`, app/url_state.py), so that a shared link opens the same run and
dictionary.
"""

import os

import streamlit as st

from app.navigation import st_pages
from app.run_folder import (
    DICTIONARY_KEY,
    RUN_FOLDER_ENV,
    RUN_FOLDER_KEY,
    MissingPiece,
    current_run,
)
from app.url_state import DICTIONARY_QUERY, RUN_QUERY, from_url, to_url

st.set_page_config(page_title="interp workbench", page_icon=":material/biotech:", layout="wide")
from_url(RUN_QUERY, RUN_FOLDER_KEY, str.strip, valid=bool)
if RUN_FOLDER_KEY not in st.session_state:
    st.session_state[RUN_FOLDER_KEY] = os.environ.get(RUN_FOLDER_ENV, "")
with st.sidebar:
    st.text_input("Run folder", key=RUN_FOLDER_KEY, help="a folder the pipeline steps wrote")
    try:
        analysed = current_run().analysed_dictionaries()
    except MissingPiece:
        analysed = []
    from_url(DICTIONARY_QUERY, DICTIONARY_KEY, str, valid=analysed.__contains__)
    if len(analysed) > 1:
        if st.session_state.get(DICTIONARY_KEY) not in analysed:
            st.session_state[DICTIONARY_KEY] = analysed[0]
        st.selectbox("Dictionary", analysed, key=DICTIONARY_KEY)
    elif analysed:
        st.caption(f"Dictionary: `{analysed[0]}`")
if st.session_state.get(RUN_FOLDER_KEY, "").strip():
    to_url(RUN_QUERY, st.session_state[RUN_FOLDER_KEY].strip(), None)
if analysed:
    chosen = st.session_state.get(DICTIONARY_KEY)
    to_url(DICTIONARY_QUERY, chosen if chosen in analysed else analysed[0], None)
st.navigation(st_pages()).run()
