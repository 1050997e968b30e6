"""The difference SAE recovers planted difference atoms; its statistics and its cache stream match
hand computations."""

import numpy as np
import pytest
import torch

from crosscoders.config import CrossCoderConfig, Source, TrainingConfig
from crosscoders.crosscoder import CrossCoder
from crosscoders.diffing.difference_sae import (
    analyze_difference_sae,
    decoder_directions,
    difference_stream,
    latent_statistics,
    pair_columns,
    rank_latents,
    train_difference_sae,
)
from crosscoders.streams import tensor_stream

D, N_ATOMS, N_TOKENS = 32, 6, 24_000


def planted_pair_activations(seed: int = 0):
    """Base activations with a large shared part; chat = base + a sparse sum of planted unit
    atoms (each active on 25% of tokens, 1.5 per token on average, coefficient 1..3)."""
    generator = torch.Generator().manual_seed(seed)
    atoms = torch.randn(N_ATOMS, D, generator=generator)
    atoms = atoms / atoms.norm(dim=-1, keepdim=True)
    base = 4.0 * torch.randn(N_TOKENS, D, generator=generator)
    active = torch.rand(N_TOKENS, N_ATOMS, generator=generator) < 0.25
    coefficients = (1 + 2 * torch.rand(N_TOKENS, N_ATOMS, generator=generator)) * active
    chat = base + coefficients @ atoms
    return torch.stack([base, chat], dim=1), atoms


def test_difference_sae_recovers_planted_difference_atoms(tmp_path):
    acts, atoms = planted_pair_activations()
    stream = difference_stream(tensor_stream(acts, batch_size=256, seed=0))
    training = TrainingConfig(
        n_steps=400, batch_size=256, lr=1e-2, warmup_steps=20, log_every=100, checkpoint_every=400
    )
    coder = train_difference_sae(
        stream,
        tmp_path / "sae",
        d_model=D,
        dict_size=2 * N_ATOMS,
        k=2,
        training=training,
        source=Source("chat - base", 0, "chat-base"),
        progress=False,
    )
    directions = decoder_directions(coder)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    best = (atoms @ directions.T).max(dim=1).values
    assert best.min().item() > 0.9, best


def test_difference_stream_is_chat_minus_base():
    acts = torch.randn(64, 2, 5)
    (batch,) = [next(difference_stream(tensor_stream(acts, 16, seed=1))(2))]
    (plain,) = [next(tensor_stream(acts, 16, seed=1)(2))]
    torch.testing.assert_close(batch, (plain[:, 1] - plain[:, 0])[:, None])


def identity_sae(d: int) -> CrossCoder:
    """An SAE whose latents j < d read +x_j and d <= j < 2d read -x_j (ReLU), no bias, top-k
    off (relu_l1): activations are known by hand."""
    config = CrossCoderConfig(
        n_sources=1,
        d_model=d,
        dict_size=2 * d,
        activation="relu_l1",
        decoder_init_norm=1.0,
        apply_b_dec_to_input=False,
    )
    coder = CrossCoder(config)
    eye = torch.eye(d)
    with torch.no_grad():
        coder.W_enc.copy_(torch.cat([eye, -eye], dim=1)[None])
        coder.b_enc.zero_()
        coder.W_dec.copy_(torch.cat([eye, -eye], dim=0)[None])
        coder.b_dec.zero_()
        coder.input_scale.fill_(1.0)
    return coder.eval()


def test_latent_statistics_match_a_hand_computation():
    coder = identity_sae(2)
    x = torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0], [0.5, 0.5]])[:, None]
    stats = latent_statistics(coder, [(0, x[:3]), (3, x[3:])], n_top=2)
    # latent 0 = relu(x0): 1, 3, 0, 0.5 ; latent 1 = relu(x1): 0, 0, 4, 0.5
    # latent 2 = relu(-x0): 0, 0, 1, 0 ; latent 3 = relu(-x1): 2, 0, 0, 0
    np.testing.assert_allclose(stats["freq"], [0.75, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(stats["mean_act"], [4.5 / 4, 4.5 / 4, 0.25, 0.5])
    np.testing.assert_allclose(stats["max_act"], [3, 4, 1, 2])
    assert stats["top_index"][0].tolist() == [1, 0]
    assert stats["top_index"][2].tolist() == [2, -1]  # fired once: the second slot is empty
    assert rank_latents(stats).tolist() == [0, 1, 3, 2]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    from cache_support import mixed_source
    from tiny_models import tiny_pair

    from interp.cache import ActivationCache, build_cache, cache_config

    pair = tiny_pair()
    folder = tmp_path_factory.mktemp("cache")
    config = cache_config(pair, [1], "wiki:0.5,chat:0.5", n_tokens=400, ctx=24, dtype="fp32")
    build_cache(pair, config, folder, source=mixed_source(), progress=False)
    return pair, ActivationCache(folder)


def test_analysis_on_a_cache_reads_the_differences_it_was_given(tiny_cache, tmp_path):
    pair, cache = tiny_cache
    base_column, chat_column = pair_columns(cache)
    coder = identity_sae(cache.d_model)
    rows = analyze_difference_sae(
        coder,
        cache,
        pair.chat.model,
        pair.tokenizer,
        tmp_path,
        n_latents=3,
        n_examples=2,
        batch_size=100,
        progress=False,
    )
    everything = cache.gather(np.arange(cache.n_tokens))
    diff = everything[:, chat_column] - everything[:, base_column]
    expected = torch.cat([diff.clamp_min(0), (-diff).clamp_min(0)], dim=1)  # identity SAE codes
    top = int(expected.mean(0).argmax())
    assert rows[0]["latent"] == top
    assert rows[0]["mean_act"] == pytest.approx(float(expected[:, top].mean()), rel=1e-5)
    assert rows[0]["examples"][0]["index"] == int(expected[:, top].argmax())
    assert len(rows) == 3 and len(rows[0]["logit_tokens"]) == 20
