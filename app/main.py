"""Entry point of the Streamlit app (`interp app RUN_FOLDER` runs `streamlit run app/main.py`).

The sidebar holds the run folder (default: `$INTERP_RUN_FOLDER`, set by `interp app`) and the
dictionary; every page reads them through `app.run_folder`.
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

st.set_page_config(page_title="interp workbench", page_icon=":material/biotech:", layout="wide")
if RUN_FOLDER_KEY not in st.session_state:
    st.session_state[RUN_FOLDER_KEY] = os.environ.get(RUN_FOLDER_ENV, "")
with st.sidebar:
    st.text_input("Run folder", key=RUN_FOLDER_KEY, help="a folder the pipeline steps wrote")
    try:
        analysed = current_run().analysed_dictionaries()
    except MissingPiece:
        analysed = []
    if len(analysed) > 1:
        st.selectbox("Dictionary", analysed, key=DICTIONARY_KEY)
    elif analysed:
        st.caption(f"Dictionary: `{analysed[0]}`")
st.navigation(st_pages()).run()
