"""Live computations of the app: the models, the dictionary and the steering maps are loaded lazily
on the first request and kept by `st.cache_resource` (one copy per server process). Everything
else in the app renders from precomputed files.

The computations reuse the pipeline's own code: `interp.hooks.residual_stream` and
`PairDictionary.encode` for latent activations, `greedy_responses` + `token_shift_rows` for the
base-vs-chat shift, `steered_responses` (SteeringMap.apply) for steered generation.
"""

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

if TYPE_CHECKING:  # the pipeline modules are imported when a live feature is first used
    from interp.models import LoadedModel, ModelPair


@st.cache_resource(show_spinner="Loading the base and chat models...", max_entries=1)
def model_pair(base_spec: str, chat_spec: str) -> "ModelPair":
    from interp.models import load_pair

    return load_pair(base_spec, chat_spec, dtype="auto")  # on the CPU: float32


@st.cache_resource(show_spinner="Loading the model...", max_entries=1)
def single_model(spec: str) -> "LoadedModel":
    from interp.models import load_model

    return load_model(spec, dtype="auto")  # on the CPU: float32


@st.cache_resource(show_spinner="Loading the dictionary...", max_entries=2)
def pair_dictionary(folder: str, layer: int | None):
    """The dictionary as [base, chat]; its own sources (provenance) name the layer when they
    exist, as in the analysis, else `layer` (the run's)."""
    from crosscoders.diffing.pair_dictionary import PairDictionary
    from crosscoders.io import load_crosscoder

    coder = load_crosscoder(Path(folder))
    return PairDictionary.from_coder(coder, None if coder.config.sources else layer)


def dictionary_models(dictionary, info: dict) -> tuple[str | None, str | None]:
    """(base, chat) specs: the ones the dictionary was trained on (its sources), else the run's
    (None where neither names one)."""
    sources = dictionary.coder.config.sources
    if sources:
        return sources[dictionary.base_index].model, sources[dictionary.chat_index].model
    return info.get("base"), info.get("chat")


@st.cache_resource(show_spinner="Loading the models and the dictionary...", max_entries=2)
def explorer(run_folder: str, dictionary: str):
    """The exploring API on a run's dictionary (`steering.explore.open_run`: the pair run.json
    names, the dictionary's own sources): the Search page's encoding and the Latent page's
    steering go through it, so the app shows exactly what the API computes."""
    from steering.explore import open_run

    return open_run(run_folder, dictionary)


@st.cache_resource(show_spinner="Encoding the text...", max_entries=32)
def search(run_folder: str, dictionary: str, text: str, per_token: int):
    """(encoded, per-token table, top latents) of `text` (app/search.py, without the analysis
    columns), kept per text so that every rerun of the Search page after the first is free.
    Shared and never modified: the page adds the analysis columns into new frames."""
    from app.search import per_token_latents

    explorer_ = explorer(run_folder, dictionary)
    encoded = explorer_.encode(text)
    table = per_token_latents(encoded, explorer_.coder, None, per_token)
    top = explorer_.top_latents(text, n=20).drop(columns="latent_class", errors="ignore")
    return encoded, table.drop(columns=["latent_class", "delta"]), top


def steer_both(
    explorer,
    latent: int,
    prompt: str,
    mode: str,
    value: float,
    strength: float,
    max_new_tokens: int,
) -> dict[str, dict[str, str]]:
    """{model: {"unsteered": text, "steered": text}} for base and chat: `Explorer.steer` with
    the latent at `strength` (strength 0 is the unsteered model, bit for bit)."""
    generations = {}
    for model in ("base", "chat"):
        generations[model] = {
            label: explorer.steer(
                latent, prompt, strength=lam, value=value, model=model, mode=mode,
                max_new_tokens=max_new_tokens,
            )
            for label, lam in (("unsteered", 0.0), ("steered", strength))
        }  # fmt: skip
    return generations


@st.cache_resource(show_spinner="Loading the steering map...", max_entries=4)
def steering_map(folder: str):
    from steering.steering_map import load_map

    return load_map(folder).eval()


def latent_activations(
    pair: "ModelPair", dictionary, text: str, latent: int
) -> tuple[list[int], np.ndarray]:
    """Token ids of `text` (special tokens dropped: the activation cache excludes BOS, whose norm
    dwarfs the rest) and latent `latent`'s activation on each, from the two models'
    `resid_post[layer]` stacked as [base, chat]."""
    import torch

    from interp.hooks import residual_stream

    ids = pair.tokenizer(text, return_tensors="pt", add_special_tokens=True).input_ids
    streams = [
        residual_stream(loaded.model, ids.to(loaded.device), [dictionary.layer])[0, :, 0].cpu()
        for loaded in pair
    ]
    x = torch.stack(streams, dim=1).float()  # [seq, 2 (base, chat), d]
    activations = dictionary.encode(x)[:, latent].numpy()  # encode runs under no_grad
    special = set(pair.tokenizer.all_special_ids)
    keep = [i for i, token in enumerate(ids[0].tolist()) if token not in special]
    return [int(ids[0, i]) for i in keep], activations[keep]


def token_shift(pair: "ModelPair", prompt: str, max_new_tokens: int) -> pd.DataFrame:
    """URIAL shift of the chat model's greedy response to `prompt` (as token_shift.parquet)."""
    from crosscoders.diffing.responses import greedy_responses
    from crosscoders.diffing.token_shift import token_shift_rows

    response = greedy_responses(pair.chat, [prompt], max_new_tokens)[0]
    return pd.DataFrame(
        token_shift_rows(pair.base.model, pair.chat.model, response, 0, pair.tokenizer)
    )


def generate(
    loaded: "LoadedModel", prompt: str, max_new_tokens: int, steering=None, strength: float = 0.0
) -> str:
    """The greedy response to `prompt` in the chat template, with `steering` applied at
    `strength` when given (the evaluation's own `steered_responses`)."""
    from steering.evaluate import steered_responses

    return steered_responses(loaded, [prompt], steering, strength, max_new_tokens)[0]


def steered_model_spec(task: str, config: dict) -> str:
    """The spec of the model a task's maps edit (`steering.evaluate.TASKS`: base or chat), from
    the steering step's config.json."""
    from steering.evaluate import TASKS

    side = TASKS[task].steered if task in TASKS else "chat"
    return str(config.get(side, ""))


def guarded(what: str, load, *args):
    """`load(*args)`, or an error box naming what could not be loaded (live features are
    optional: the precomputed pages work without models)."""
    try:
        return load(*args)
    except Exception as error:  # noqa: BLE001 - any failure to load is shown, not raised
        st.error(f"cannot load {what}: {type(error).__name__}: {error}")
        return None
