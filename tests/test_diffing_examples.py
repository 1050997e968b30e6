"""Pieces of the cache passes against brute force: streaming top-k, sequence bounds, example
windows, token subsets."""

import numpy as np
import torch

from crosscoders.diffing.examples import (
    ExampleCollector,
    ExampleSettings,
    KeptPerLatent,
    WindowRequests,
    select_examples,
    sequence_bounds,
)
from crosscoders.diffing.token_subsets import TemplateTokens, token_subsets


def test_streaming_top_k_equals_global_top_k():
    generator = torch.Generator().manual_seed(0)
    f = torch.relu(torch.randn(500, 7, generator=generator))
    kept = KeptPerLatent(7, k=5)
    for start in range(0, 500, 64):
        batch = f[start : start + 64]
        kept.update(torch.where(batch > 0, batch, -torch.inf), batch, start)
    expected = f.topk(5, dim=0)
    assert torch.equal(kept.keys, expected.values.T)
    assert torch.equal(kept.indices, expected.indices.T)
    assert torch.equal(kept.acts, expected.values.T)


def test_sequence_bounds():
    seq_ids = np.array([4, 4, 4, 7, 9, 9])
    starts, ends = sequence_bounds(seq_ids)
    assert starts.tolist() == [0, 0, 0, 3, 4, 4]
    assert ends.tolist() == [2, 2, 2, 3, 5, 5]


def test_examples_are_one_per_sequence_and_windows_stay_in_their_sequence():
    seq_ids = np.repeat(np.arange(10), 6)  # 10 sequences of 6 tokens
    f = torch.zeros(60, 2)
    f[:, 0] = torch.arange(60, dtype=torch.float32)  # latent 0: largest at the end of each seq
    f[13, 1] = 5.0  # latent 1 fires once
    settings = ExampleSettings(
        n_top=3, quantiles=(0.5,), n_per_quantile=1, sample_size=60, window_before=2, window_after=2
    )
    collector = ExampleCollector(2, settings, seed=0)
    for start in range(0, 60, 16):  # batches cut sequences
        collector.update(
            f[start : start + 16], torch.from_numpy(seq_ids[start : start + 16]), start
        )
    examples = select_examples(collector, seq_ids)
    top0 = examples[(examples.latent == 0) & (examples.kind == "top")]
    assert top0["token"].tolist() == [59, 53, 47]  # best token of the 3 best sequences
    median0 = examples[(examples.latent == 0) & (examples.kind == "q0.5")]
    assert abs(median0["activation"].item() - np.quantile(np.arange(1, 60), 0.5)) <= 1
    assert examples[examples.latent == 1]["token"].tolist() == [13, 13]  # top and median
    requests = WindowRequests.build(examples, seq_ids, settings)
    first = requests.window_start
    lengths = np.diff(requests.row_offsets)
    for row, token in enumerate(examples["token"]):
        window = np.arange(first[row], first[row] + lengths[row])
        assert token in window and (seq_ids[window] == seq_ids[token]).all()
    assert lengths[0] == 3  # token 59 ends its sequence: 2 before, none after


def test_token_subsets_from_ids():
    start, end, role, newline, word = 4, 5, 6, 8, 20
    # sequence 0: a chat turn; sequence 1: plain text
    token_ids = np.array([start, role, newline, word, word, end, newline, word, word, word])
    seq_ids = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    masks = token_subsets(token_ids, seq_ids, TemplateTokens(start, end))
    assert masks["chat"].tolist() == [True] * 7 + [False] * 3
    assert (masks["wiki"] == ~masks["chat"]).all()
    expected = [True, True, True, False, False, True, True, False, False, False]
    assert masks["template"].tolist() == expected
    assert (masks["other"] == ~masks["template"]).all()
