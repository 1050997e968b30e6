"""Streamlit app: browses run folders (latents, TuCo, steering, base-vs-chat token shift); it only
reads what the pipeline steps wrote and never retrains anything. Start it with `interp app RUN`."""
