"""Max-activating and quantile examples of every latent, with per-token activations over a context
window, and per-latent activation histograms: what the app shows for one latent.

Pass 1 (cache_pass.py) keeps per latent the largest activations (`top`, with their index in the
cache's token stream; within a batch only each sequence's best token competes, so long sequences
cannot crowd out the others) and a uniform sample of its non-zero activations (`sample`: every
firing gets a random key and the largest keys are kept, a bottom-k sketch). Then:
- "top" examples: the largest activations, at most one per sequence;
- "q0.25", "q0.5", ... examples: the sampled firings closest to that quantile of the latent's
  non-zero activation distribution.
Pass 2 re-encodes the stream and reads, for every token of every example's window, the latent's
activation and each model's encoder input x_m . W_enc^m[:, j] (which model drives the latent),
and fills the histograms (bins over [0, max_act], non-zero activations only).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from crosscoders.diffing.firings import Firings, top_per_group
from crosscoders.diffing.pair_dictionary import PairDictionary


@dataclass
class ExampleSettings:
    n_top: int = 10
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75)
    n_per_quantile: int = 2
    sample_size: int = 64  # firings sampled per latent for the quantile examples
    window_before: int = 12
    window_after: int = 4
    hist_bins: int = 20

    @property
    def top_candidates(self) -> int:
        """Largest activations kept per latent before keeping one per sequence (a sequence cut
        by a batch boundary can hold two)."""
        return 2 * self.n_top


class KeptPerLatent:
    """Per latent, the k entries of a token stream with the largest keys: key, activation and
    stream index (key -inf: empty slot)."""

    def __init__(self, dict_size: int, k: int, device: torch.device | str = "cpu") -> None:
        self.keys = torch.full((dict_size, k), -torch.inf, device=device)
        self.acts = torch.zeros(dict_size, k, device=device)
        self.indices = torch.full((dict_size, k), -1, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(
        self,
        latents: Int[Tensor, " n"],
        keys: Float[Tensor, " n"],
        acts: Float[Tensor, " n"],
        indices: Int[Tensor, " n"],
    ) -> None:
        """Merge candidate entries (any number per latent) into the kept ones."""
        # only candidates beating their latent's current k-th key can enter (keys stay sorted)
        beats = keys > self.keys[latents, -1]
        latents, keys, acts, indices = latents[beats], keys[beats], acts[beats], indices[beats]
        if latents.shape[0] == 0:
            return
        dict_size, k = self.keys.shape
        chosen, rank = top_per_group(latents, keys, k)
        where = (latents[chosen], rank)
        batch_keys = torch.full_like(self.keys, -torch.inf).index_put_(where, keys[chosen])
        batch_acts = torch.zeros_like(self.acts).index_put_(where, acts[chosen])
        batch_indices = torch.full_like(self.indices, -1).index_put_(where, indices[chosen])
        best = torch.cat([self.keys, batch_keys], dim=1).topk(k, dim=1)
        self.keys = best.values
        self.acts = torch.cat([self.acts, batch_acts], dim=1).gather(1, best.indices)
        self.indices = torch.cat([self.indices, batch_indices], dim=1).gather(1, best.indices)


class ExampleCollector:
    """Pass-1 state: top activations and the uniform firing sample of every latent."""

    def __init__(
        self,
        dict_size: int,
        settings: ExampleSettings,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.settings = settings
        self.top = KeptPerLatent(dict_size, settings.top_candidates, device)
        self.sample = KeptPerLatent(dict_size, settings.sample_size, device)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    @torch.no_grad()
    def update(self, codes: Firings, seq_ids: Int[Tensor, " batch"], start: int) -> None:
        """Add one batch whose first token is stream token `start`."""
        indices = codes.rows + start
        # only each sequence's best token of the batch competes for the top list (seq ids never
        # decrease along the stream, so a running count of changes numbers the batch's sequences)
        seq_ids = seq_ids.to(codes.rows.device)
        sequence = torch.zeros_like(seq_ids)
        sequence[1:] = torch.cumsum(seq_ids[1:] != seq_ids[:-1], dim=0)
        contender = codes.values > self.top.keys[codes.latents, -1]
        rows, latents = codes.rows[contender], codes.latents[contender]
        values = codes.values[contender]
        best, _ = top_per_group(latents * codes.batch_size + sequence[rows], values, 1)
        self.top.update(latents[best], values[best], values[best], indices[contender][best])
        random_keys = torch.rand(len(codes), generator=self.generator, device=codes.values.device)
        self.sample.update(codes.latents, random_keys, codes.values, indices)


def select_examples(collector: ExampleCollector, seq_ids: np.ndarray) -> pd.DataFrame:
    """One row per (latent, example): latent, kind, rank, token (stream index), activation."""
    settings = collector.settings
    top_keys = collector.top.keys.cpu().numpy()
    top_indices = collector.top.indices.cpu().numpy()
    sample_keys = collector.sample.keys.cpu().numpy()
    sample_acts = collector.sample.acts.cpu().numpy()
    sample_indices = collector.sample.indices.cpu().numpy()
    rows: list[tuple[int, str, int, int, float]] = []
    for latent in range(top_keys.shape[0]):
        kept = np.isfinite(top_keys[latent])
        if not kept.any():
            continue  # never fired
        seen: set[int] = set()
        for value, token in zip(top_keys[latent][kept], top_indices[latent][kept], strict=True):
            seq = int(seq_ids[token])
            if seq in seen:
                continue
            seen.add(seq)
            rows.append((latent, "top", len(seen) - 1, int(token), float(value)))
            if len(seen) == settings.n_top:
                break
        sampled = np.isfinite(sample_keys[latent])
        acts, tokens = sample_acts[latent][sampled], sample_indices[latent][sampled]
        for q in settings.quantiles:
            target = np.quantile(acts, q)
            nearest = np.argsort(np.abs(acts - target), kind="stable")[: settings.n_per_quantile]
            for rank, position in enumerate(nearest):
                rows.append((latent, f"q{q:g}", rank, int(tokens[position]), float(acts[position])))
    table = pd.DataFrame(rows, columns=["latent", "kind", "rank", "token", "activation"])
    # typed even when empty (a dictionary with no firing latent): the columns index arrays
    return table.astype({"latent": np.int64, "rank": np.int64, "token": np.int64})


def sequence_bounds(seq_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every stream token, the stream index of the first and last token of its sequence
    (sequences are contiguous in the stream)."""
    n = seq_ids.shape[0]
    boundary = np.ones(n, dtype=bool)
    boundary[1:] = seq_ids[1:] != seq_ids[:-1]
    starts = np.maximum.accumulate(np.where(boundary, np.arange(n), 0))
    last = np.ones(n, dtype=bool)
    last[:-1] = boundary[1:]
    ends = np.minimum.accumulate(np.where(last, np.arange(n), n)[::-1])[::-1]
    return starts, ends


@dataclass
class WindowRequests:
    """Every (example, window token) pair whose activation pass 2 must read, sorted by token."""

    token: np.ndarray  # stream index
    latent: np.ndarray
    slot: np.ndarray  # position in the flat output arrays
    row_offsets: np.ndarray  # example r owns slots row_offsets[r] : row_offsets[r + 1]
    window_start: np.ndarray  # stream index of each example's first window token

    @classmethod
    def build(
        cls, examples: pd.DataFrame, seq_ids: np.ndarray, settings: ExampleSettings
    ) -> "WindowRequests":
        starts, ends = sequence_bounds(seq_ids)
        token = examples["token"].to_numpy()
        first = np.maximum(token - settings.window_before, starts[token])
        last = np.minimum(token + settings.window_after, ends[token])
        lengths = last - first + 1
        row_offsets = np.concatenate([[0], np.cumsum(lengths)])
        row_of_slot = np.repeat(np.arange(len(examples)), lengths)
        within = np.arange(row_offsets[-1]) - row_offsets[row_of_slot]
        tokens = first[row_of_slot] + within
        latents = examples["latent"].to_numpy()[row_of_slot]
        order = np.argsort(tokens, kind="stable")
        return cls(tokens[order], latents[order], order, row_offsets, first)


class WindowReader:
    """Pass-2 state: window activations, per-model encoder inputs and histograms."""

    def __init__(
        self,
        dictionary: PairDictionary,
        requests: WindowRequests,
        max_act: Float[Tensor, " F"],
        hist_bins: int,
    ) -> None:
        self.dictionary = dictionary
        self.requests = requests
        n_slots = requests.slot.shape[0]
        self.acts = np.zeros(n_slots, dtype=np.float32)
        self.encoder_inputs = np.zeros((2, n_slots), dtype=np.float32)
        self.max_act = max_act
        self.hist_bins = hist_bins
        self.counts = torch.zeros(
            max_act.shape[0] * hist_bins, dtype=torch.long, device=max_act.device
        )

    @torch.no_grad()
    def update(self, x: Float[Tensor, "batch 2 d"], start: int) -> None:
        """Encode one raw batch [base, chat] (the stream tokens from `start` on) with the coder's
        own `encode`, and keep each requested (token, latent)'s per-source encoder input."""
        f = self.dictionary.encode(x)
        stop = start + f.shape[0]
        lo, hi = np.searchsorted(self.requests.token, [start, stop])
        if hi > lo:
            rows = torch.from_numpy(self.requests.token[lo:hi] - start).to(f.device)
            latents = torch.from_numpy(self.requests.latent[lo:hi]).to(f.device)
            slots = self.requests.slot[lo:hi]
            self.acts[slots] = f[rows, latents].cpu().numpy()
            inputs = self.dictionary.encoder_inputs(x[rows], latents)
            self.encoder_inputs[:, slots] = inputs.cpu().numpy()
        self._histogram(Firings.of(f))

    def _histogram(self, codes: Firings) -> None:
        max_act = self.max_act[codes.latents]
        bins = codes.values / max_act.clamp_min(torch.finfo(max_act.dtype).tiny) * self.hist_bins
        bins = bins.long().clamp(max=self.hist_bins - 1)
        self.counts += torch.bincount(
            codes.latents * self.hist_bins + bins, minlength=self.counts.shape[0]
        )

    def histograms(self) -> pd.DataFrame:
        counts = self.counts.view(-1, self.hist_bins).cpu().numpy()
        max_act = self.max_act.cpu().numpy()
        fired = np.flatnonzero(max_act > 0)
        return pd.DataFrame(
            {
                "latent": fired,
                "bin_edges": [np.linspace(0.0, max_act[j], self.hist_bins + 1) for j in fired],
                "counts": [counts[j] for j in fired],
            }
        )

    def example_table(
        self,
        examples: pd.DataFrame,
        token_ids: np.ndarray,
        seq_ids: np.ndarray,
        positions: np.ndarray,
    ) -> pd.DataFrame:
        """examples.parquet: per example its window's token ids and activations."""
        offsets = self.requests.row_offsets
        first = self.requests.window_start
        token = examples["token"].to_numpy()
        windows = [slice(offsets[r], offsets[r + 1]) for r in range(len(examples))]
        lengths = offsets[1:] - offsets[:-1]
        return pd.DataFrame(
            {
                "latent": examples["latent"].to_numpy(),
                "kind": examples["kind"].to_numpy(),
                "rank": examples["rank"].to_numpy(),
                "seq_id": seq_ids[token],
                "position": positions[token],
                "activation": examples["activation"].to_numpy().astype(np.float32),
                "max_index": (token - first).astype(np.int32),
                "token_ids": [
                    token_ids[first[r] : first[r] + lengths[r]].astype(np.int32)
                    for r in range(len(examples))
                ],
                "acts": [self.acts[w] for w in windows],
                "acts_base": [self.encoder_inputs[0, w] for w in windows],
                "acts_chat": [self.encoder_inputs[1, w] for w in windows],
            }
        )
