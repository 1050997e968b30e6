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
from crosscoders.diffing.firings import Firings, top_per_group
from crosscoders.diffing.token_subsets import TemplateTokens, token_subsets


def test_top_per_group_keeps_the_k_largest_of_each_group_earliest_first_on_ties():
    groups = torch.tensor([2, 0, 2, 2, 0, 5, 2])
    keys = torch.tensor([1.0, 3.0, 4.0, 4.0, 2.0, 0.5, 0.0])
    chosen, rank = top_per_group(groups, keys, k=2)
    got = sorted(zip(groups[chosen].tolist(), rank.tolist(), chosen.tolist(), strict=True))
    assert got == [(0, 0, 1), (0, 1, 4), (2, 0, 2), (2, 1, 3), (5, 0, 5)]


def test_streaming_top_k_equals_global_top_k():
    generator = torch.Generator().manual_seed(0)
    f = torch.relu(torch.randn(500, 7, generator=generator))
    kept = KeptPerLatent(7, k=5)
    for start in range(0, 500, 64):
        codes = Firings.of(f[start : start + 64])
        kept.update(codes.latents, codes.values, codes.values, codes.rows + start)
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
        batch_seq_ids = torch.from_numpy(seq_ids[start : start + 16])
        collector.update(Firings.of(f[start : start + 16]), batch_seq_ids, start)
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


def test_a_dictionary_with_no_firing_latent_gives_no_windows():
    """A dead dictionary (seen: the L1 crosscoder of the science profile on the narrow organism)
    selects no example; pass 2 must get empty windows, not an index error on a float column."""
    seq_ids = np.repeat(np.arange(3), 4)
    settings = ExampleSettings(
        n_top=3, quantiles=(0.5,), n_per_quantile=1, sample_size=12, window_before=2, window_after=2
    )
    collector = ExampleCollector(2, settings, seed=0)
    collector.update(Firings.of(torch.zeros(12, 2)), torch.from_numpy(seq_ids), 0)
    examples = select_examples(collector, seq_ids)
    assert len(examples) == 0 and examples["token"].dtype == np.int64
    requests = WindowRequests.build(examples, seq_ids, settings)
    assert len(requests.token) == 0 and requests.row_offsets.tolist() == [0]


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


def test_window_reader_encodes_like_the_coder():
    """Pass 2 re-derives the code from per-source encoder inputs; it must equal `encode`."""
    import pandas as pd

    from crosscoders.config import CrossCoderConfig, Source
    from crosscoders.crosscoder import CrossCoder
    from crosscoders.diffing.examples import WindowReader
    from crosscoders.diffing.pair_dictionary import PairDictionary

    d, dict_size = 8, 16
    config = CrossCoderConfig(
        n_sources=2,
        d_model=d,
        dict_size=dict_size,
        activation="batchtopk",
        k=3,
        sources=[Source("c", 0, "chat"), Source("b", 0, "base")],
    )
    coder = CrossCoder(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in (coder.W_enc, coder.W_dec, coder.b_enc):
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
        coder.input_scale.copy_(torch.tensor([0.5, 2.0]))
        coder.get_buffer("threshold").fill_(1.0)
    dictionary = PairDictionary.from_coder(coder.eval())
    x = torch.randn(10, 2, d, generator=generator)
    f = dictionary.encode(x)
    assert (f > 0).any() and (f == 0).any()
    # request every (token, latent) of a single window covering all 10 tokens, per latent
    seq_ids = np.zeros(10, dtype=np.int64)
    examples = pd.DataFrame(
        {"latent": np.arange(dict_size), "kind": "top", "rank": 0, "token": 5, "activation": 0.0}
    )
    settings = ExampleSettings(window_before=10, window_after=10)
    requests = WindowRequests.build(examples, seq_ids, settings)
    reader = WindowReader(dictionary, requests, f.max(0).values, hist_bins=4)
    reader.update(x[:6], 0)
    reader.update(x[6:], 6)
    got = np.stack([reader.acts[o : o + 10] for o in requests.row_offsets[:-1]], axis=1)
    assert np.array_equal(got, f.numpy())  # the coder's own encoder, bit for bit
    x_in = x * torch.tensor([2.0, 0.5])[None, :, None]  # [base, chat] scales
    for model, coder_source in ((0, 1), (1, 0)):  # the coder's order is [chat, base]
        expected = torch.einsum("bd,df->bf", x_in[:, model], coder.W_enc[coder_source]).detach()
        got_inputs = np.stack(
            [reader.encoder_inputs[model, o : o + 10] for o in requests.row_offsets[:-1]], 1
        )
        assert np.allclose(got_inputs, expected.numpy(), atol=1e-4)
    # the per-model inputs plus the bias are the pre-activation the coder's encoder ReLUs
    pre = torch.einsum("bsd,sdf->bf", coder.scale(dictionary.to_coder_order(x)), coder.W_enc)
    summed = np.stack(
        [reader.encoder_inputs[:, o : o + 10].sum(0) for o in requests.row_offsets[:-1]], 1
    )
    assert np.allclose(summed, pre.detach().numpy(), atol=1e-4)
    assert int(reader.counts.sum()) == int((f > 0).sum())
