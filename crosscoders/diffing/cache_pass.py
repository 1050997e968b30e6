"""The two streaming passes over the activation cache that feed every per-latent statistic.

Pass 1 (encode + decode each batch): Latent Scaling sums, firing counts per subset, max
activation, top activations and the firing sample of every latent. Pass 2 (encode only): the
activation histograms and the per-token activations of every example window (their bins and
windows are only known after pass 1). Both passes read the stream in order, in the same batches,
so a batch-dependent encoder (BatchTopK before its threshold is learned) gives the same codes.
"""

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from crosscoders.diffing.examples import (
    ExampleCollector,
    ExampleSettings,
    WindowReader,
    WindowRequests,
    select_examples,
)
from crosscoders.diffing.firings import Firings
from crosscoders.diffing.latent_scaling import LatentScalingSums
from crosscoders.diffing.latent_table import FiringStats
from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.token_subsets import SUBSETS, TemplateTokens, token_subsets
from interp.cache import ActivationCache
from interp.errors import InterpError


@dataclass
class StreamTokens:
    """Token ids, sequence ids and positions of the whole analysed stream, with subset masks."""

    start: int
    token_ids: np.ndarray
    seq_ids: np.ndarray
    positions: np.ndarray
    subsets: torch.Tensor  # [n_tokens, n_subsets] bool, columns in SUBSETS order


@dataclass
class PassResults:
    tokens: StreamTokens
    scaling: LatentScalingSums
    firing: FiringStats
    examples: pd.DataFrame  # examples.parquet
    histograms: pd.DataFrame  # activation_hist.parquet
    pass_seconds: tuple[float, float]


def pair_sources(cache: ActivationCache, layer: int) -> list[int]:
    """Indices of [base, chat] at `layer` on the cache's source axis (model-major)."""
    if layer not in cache.layers:
        raise InterpError(
            f"the dictionary reads layer {layer} but cache {str(cache.path)!r} holds layers "
            f"{cache.layers}: expected a cache of the dictionary's layer"
        )
    return [cache.source_column(role, layer) for role in ("base", "chat")]


def stream_tokens(
    cache: ActivationCache, split: str, max_tokens: int | None, template: TemplateTokens
) -> StreamTokens:
    start, stop = cache.split_range(split)
    if max_tokens is not None:
        stop = min(stop, start + max_tokens)
    found = cache.tokens(np.arange(start, stop))
    token_ids, seq_ids = found["token_ids"].numpy(), found["seq_ids"].numpy()
    masks = token_subsets(token_ids, seq_ids, template)
    subsets = torch.from_numpy(np.stack([masks[name] for name in SUBSETS], axis=1))
    return StreamTokens(start, token_ids, seq_ids, found["positions"].numpy(), subsets)


def _batches(
    cache: ActivationCache, tokens: StreamTokens, split: str, batch_size: int, sources, desc: str
):
    """(offset in the analysed stream, raw [batch, 2, d] activations [base, chat])."""
    n_tokens = tokens.token_ids.shape[0]
    with tqdm(total=n_tokens, desc=desc, unit="tok", unit_scale=True) as bar:
        for batch in cache.iterate_sequential(batch_size, split=split):
            offset = int(batch.index[0]) - tokens.start
            if offset >= n_tokens:
                break
            x = batch.acts[: n_tokens - offset, sources]
            yield offset, x
            bar.update(x.shape[0])


@torch.no_grad()
def run_passes(
    cache: ActivationCache,
    dictionary: PairDictionary,
    tokens: StreamTokens,
    split: str,
    batch_size: int,
    settings: ExampleSettings,
    seed: int,
) -> PassResults:
    sources = pair_sources(cache, dictionary.layer)
    dict_size = dictionary.dict_size
    device = dictionary.W_dec.device  # every pass runs where the dictionary is
    scaling = LatentScalingSums.zeros(dict_size, device)
    firing = FiringStats.zeros(dict_size, device)
    subsets = tokens.subsets.to(device)
    collector = ExampleCollector(dict_size, settings, seed, device)
    seq_ids = torch.from_numpy(tokens.seq_ids)
    began = time.perf_counter()
    for offset, x in _batches(cache, tokens, split, batch_size, sources, "analysis pass 1"):
        x = x.to(device)
        f = dictionary.encode(x)
        codes = Firings.of(f)
        scaling.update_pair(dictionary, x, f, codes)  # in the coder's units
        firing.update(codes, subsets[offset : offset + f.shape[0]])
        collector.update(codes, seq_ids[offset : offset + f.shape[0]], offset)
    first_pass = time.perf_counter() - began
    examples = select_examples(collector, tokens.seq_ids)
    requests = WindowRequests.build(examples, tokens.seq_ids, settings)
    reader = WindowReader(dictionary, requests, firing.max_act, settings.hist_bins)
    began = time.perf_counter()
    for offset, x in _batches(cache, tokens, split, batch_size, sources, "analysis pass 2"):
        reader.update(x.to(device), offset)
    second_pass = time.perf_counter() - began
    table = reader.example_table(examples, tokens.token_ids, tokens.seq_ids, tokens.positions)
    return PassResults(
        tokens, scaling, firing.cpu(), table, reader.histograms(), (first_pass, second_pass)
    )
