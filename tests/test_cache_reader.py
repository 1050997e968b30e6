"""Reading the activation cache: exact epochs, seeded shuffles, splits, normalisation."""

import numpy as np
import pytest
import torch
from cache_support import mixed_source
from safetensors.torch import load_file
from tiny_models import tiny_pair

from interp.cache import ActivationCache, build_cache, cache_config
from interp.cache.permutation import permute
from interp.cache.reader import source_column
from interp.errors import InterpError

N_TOKENS = 700


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    pair = tiny_pair()
    config = cache_config(
        pair,
        layers=[1, 3],
        mix="wiki:0.5,chat:0.5",
        n_tokens=N_TOKENS,
        ctx=20,
        batch_size=3,
        shard_tokens=100,
    )
    out = tmp_path_factory.mktemp("reader") / "cache"
    build_cache(pair, config, out, mixed_source(), progress=False)
    return out


@pytest.fixture(scope="module")
def stored(cache_dir):
    """All shards loaded eagerly through the safetensors library: the reference."""
    cache = ActivationCache(cache_dir)
    shards = [load_file(cache_dir / s["file"]) for s in cache.manifest["shards"]]
    return {name: torch.cat([s[name] for s in shards]) for name in shards[0]}


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 1000, 4097])
def test_permutation_is_a_bijection(n):
    image = permute(np.arange(n), n, seed=5)
    assert sorted(image.tolist()) == list(range(n))
    if n >= 17:
        assert not np.array_equal(image, np.arange(n))
        assert not np.array_equal(image, permute(np.arange(n), n, seed=6))


def test_shape_and_provenance(cache_dir):
    cache = ActivationCache(cache_dir)
    assert cache.n_tokens == N_TOKENS and cache.d_model == 32
    assert cache.models == ["tiny-gemma3-0", "tiny-gemma3-chat"]
    assert cache.layers == [1, 3] and cache.n_sources == 4
    assert cache.source_names == [
        "base/resid_post[1]",
        "base/resid_post[3]",
        "chat/resid_post[1]",
        "chat/resid_post[3]",
    ]


def test_one_epoch_yields_every_token_exactly_once(cache_dir, stored):
    cache = ActivationCache(cache_dir)
    batches = list(
        cache.iterate_batches(64, split="all", seed=3, normalize=False, with_tokens=True)
    )
    index = torch.cat([b.index for b in batches])
    assert sorted(index.tolist()) == list(range(N_TOKENS))
    assert index.tolist() != list(range(N_TOKENS))  # shuffled
    acts = torch.cat([b.acts for b in batches])
    expected = stored["acts"][index].float().flatten(1, 2)  # [n, (models layers), d], model-major
    assert torch.equal(acts, expected)
    assert torch.equal(torch.cat([b.token_ids for b in batches]), stored["token_ids"][index].long())
    assert torch.equal(torch.cat([b.seq_ids for b in batches]), stored["seq_ids"][index])


def test_shuffle_is_seeded_and_global(cache_dir):
    cache = ActivationCache(cache_dir)

    def order(seed, epochs=1):
        return [
            b.index.tolist()
            for b in cache.iterate_batches(50, seed=seed, epochs=epochs, with_tokens=True)
        ]

    assert order(0) == order(0)
    assert order(0) != order(1)
    two_epochs = order(0, epochs=2)
    assert two_epochs[: len(order(0))] == order(0) and two_epochs[len(order(0)) :] != order(0)
    first_batch = order(0)[0]
    shards_hit = {i // 100 for i in first_batch}
    assert len(shards_hit) >= 4  # one batch draws tokens from all over the cache


def test_train_and_validation_partition_the_stream_at_a_sequence_boundary(cache_dir, stored):
    cache = ActivationCache(cache_dir, validation_fraction=0.2)
    train = torch.cat([b.index for b in cache.iterate_batches(64, "train", with_tokens=True)])
    valid = torch.cat([b.index for b in cache.iterate_batches(64, "validation", with_tokens=True)])
    assert sorted(torch.cat([train, valid]).tolist()) == list(range(N_TOKENS))
    assert abs(len(valid) - 0.2 * N_TOKENS) <= 20  # within one sequence (ctx 20) of 20%
    train_seqs = set(stored["seq_ids"][train].tolist())
    valid_seqs = set(stored["seq_ids"][valid].tolist())
    assert not train_seqs & valid_seqs


def test_normalisation_makes_the_mean_norm_sqrt_d(cache_dir, stored):
    cache = ActivationCache(cache_dir)
    raw = stored["acts"].double().flatten(1, 2)
    mean_norm = raw.norm(dim=-1).mean(0)
    torch.testing.assert_close(cache.mean_norms().double(), mean_norm, rtol=1e-5, atol=0)
    normalized = torch.cat(list(cache.iterate_batches(128, split="all", normalize=True)))
    torch.testing.assert_close(
        normalized.double().norm(dim=-1).mean(0),
        torch.full((4,), 32**0.5, dtype=torch.double),
        rtol=1e-5,
        atol=0,
    )


def test_sequential_iteration_is_the_stream_in_order(cache_dir, stored):
    cache = ActivationCache(cache_dir)
    batches = list(cache.iterate_sequential(130))  # batches straddle shard boundaries
    assert torch.equal(torch.cat([b.index for b in batches]), torch.arange(N_TOKENS))
    assert torch.equal(torch.cat([b.acts for b in batches]), stored["acts"].float().flatten(1, 2))
    assert torch.equal(torch.cat([b.positions for b in batches]), stored["positions"].long())


def test_sequence_range_finds_every_token_of_a_sequence(cache_dir, stored):
    cache = ActivationCache(cache_dir)
    for seq_id in sorted(set(stored["seq_ids"].tolist())):
        start, stop = cache.sequence_range(seq_id)
        rows = torch.nonzero(stored["seq_ids"] == seq_id).flatten()
        assert (start, stop) == (int(rows[0]), int(rows[-1]) + 1)
    with pytest.raises(InterpError, match="not in cache"):
        cache.sequence_range(10**6)


def test_an_incomplete_cache_is_refused(tmp_path, monkeypatch):
    from interp.cache import writer as writer_module

    pair = tiny_pair()
    config = cache_config(pair, layers=[1], mix="wiki", n_tokens=300, ctx=20, shard_tokens=100)
    real_record = writer_module.record_shard

    def crash_on_second(folder, record, *args):
        if record["index"] == 1:
            raise KeyboardInterrupt
        return real_record(folder, record, *args)

    monkeypatch.setattr(writer_module, "record_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_cache(pair, config, tmp_path / "c", mixed_source(), progress=False)
    with pytest.raises(InterpError, match=r"incomplete \(1/3 shards\)"):
        ActivationCache(tmp_path / "c")


def test_source_column_is_model_major_and_refuses_what_is_not_there():
    roles, layers = ["base", "chat"], [3, 5, 7]
    names = [f"{role}/{layer}" for role in roles for layer in layers]  # the sources axis
    for role in roles:
        for layer in layers:
            assert names[source_column(roles, layers, role, layer)] == f"{role}/{layer}"
    with pytest.raises(InterpError, match="unknown model 'judge'"):
        source_column(roles, layers, "judge", 3)
    with pytest.raises(InterpError, match="layer 4 is not among"):
        source_column(roles, layers, "chat", 4)
