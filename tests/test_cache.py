"""Writing the paired activation cache: content, token stream, statistics, resume, bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from cache_support import DAMAGE_KINDS, damage_shard, documents, mixed_source
from safetensors.torch import load_file
from tiny_models import tiny_model, tiny_pair

from interp.cache import InMemorySource, build_cache, cache_config, verify_cache
from interp.cache import writer as writer_module
from interp.cache.token_stream import LENGTH_SORT_BATCHES
from interp.cache.writer import token_plan
from interp.errors import InterpError

BF16 = dict(rtol=2**-7, atol=1e-4)  # one bf16 rounding of the cached value


def small_config(pair, **overrides):
    options = dict(
        layers=[1, 2],
        mix="wiki:0.5,chat:0.5",
        n_tokens=600,
        ctx=24,
        batch_size=4,
        shard_tokens=128,
    )
    options.update(overrides)
    return cache_config(pair, **options)


def load_all(folder, manifest):
    shards = [load_file(folder / shard["file"]) for shard in manifest["shards"]]
    return {name: torch.cat([s[name] for s in shards]) for name in shards[0]}


def test_cached_activations_equal_a_direct_forward(pair, tmp_path):
    source = mixed_source()
    config = small_config(pair)
    manifest = build_cache(pair, config, tmp_path / "cache", source, progress=False)
    cached = load_all(tmp_path / "cache", manifest)
    plan = token_plan(pair, config, source)
    assert cached["acts"].dtype == torch.bfloat16
    assert cached["acts"].shape == (600, 2, 2, 32)
    bos = pair.tokenizer.bos_token_id
    start_of_turn = pair.tokenizer.convert_tokens_to_ids("<start_of_turn>")
    assert bos not in cached["token_ids"].tolist()  # BOS excluded by default
    assert start_of_turn in cached["token_ids"].tolist()  # chat template tokens are kept
    partial = []
    for seq_id, ids in enumerate(plan.sequences):
        rows = cached["seq_ids"] == seq_id
        positions = cached["positions"][rows].long()
        assert torch.equal(cached["token_ids"][rows], torch.from_numpy(ids)[positions])
        assert positions.tolist() == np.flatnonzero(plan.keep[seq_id]).tolist()
        if positions.tolist() != [p for p, t in enumerate(ids) if t != bos]:
            partial.append(seq_id)  # cached in part: only the last sequence drawn, cut at n_tokens
        for model_index, loaded in enumerate(pair):
            with torch.no_grad():
                hidden = loaded.model(
                    torch.from_numpy(ids.astype(np.int64))[None], output_hidden_states=True
                ).hidden_states
            for layer_index, layer in enumerate(config.layers):
                direct = hidden[layer + 1][0, positions]  # resid_post[l] = hidden_states[l + 1]
                got = cached["acts"][rows][:, model_index, layer_index].float()
                torch.testing.assert_close(got, direct, **BF16)
    assert len(partial) <= 1
    assert not torch.allclose(cached["acts"][:, 0].float(), cached["acts"][:, 1].float())


def test_token_stream_mixture_truncation_and_determinism(pair):
    source = mixed_source()
    config = small_config(pair, n_tokens=2000, ctx=16, shard_tokens=2000)
    plan = token_plan(pair, config, source)
    shares = {use.recipe: use.tokens for use in plan.usage}
    assert sum(shares.values()) == 2000
    assert abs(shares["wiki"] - shares["chat"]) <= 16  # token shares exact up to one sequence
    assert max(len(ids) for ids in plan.sequences) == 16  # long documents truncated to ctx
    assert all(use.passes >= 1 for use in plan.usage)
    window = config.batch_size * LENGTH_SORT_BATCHES  # length-sorted windows: little padding
    lengths = [len(ids) for ids in plan.sequences]
    for start in range(0, len(lengths), window):
        assert lengths[start : start + window] == sorted(lengths[start : start + window])
    assert len(set(lengths)) > 1
    again = token_plan(pair, config, source)
    other_seed = token_plan(pair, small_config(pair, n_tokens=2000, ctx=16, seed=1), source)
    assert plan.sha256() == again.sha256()
    assert plan.sha256() != other_seed.sha256()


def test_statistics_match_a_hand_computation(pair, tmp_path):
    manifest = build_cache(pair, small_config(pair), tmp_path / "c", mixed_source(), progress=False)
    acts = load_all(tmp_path / "c", manifest)["acts"].double()
    stats = manifest["stats"]
    assert stats["count"] == 600
    np.testing.assert_allclose(stats["mean"], acts.mean(0).numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["mean_norm"], acts.norm(dim=-1).mean(0).numpy(), rtol=1e-6)


def test_keep_special_caches_bos(pair, tmp_path):
    config = small_config(pair, keep_special=True, mix="chat")
    manifest = build_cache(pair, config, tmp_path / "c", mixed_source(), progress=False)
    cached = load_all(tmp_path / "c", manifest)
    assert (cached["positions"] == 0).any()
    assert pair.tokenizer.bos_token_id in cached["token_ids"].tolist()
    assert manifest["excluded_token_ids"] == []


def shard_shas(manifest):
    return [(shard["file"], shard["n_tokens"], shard["sha256"]) for shard in manifest["shards"]]


def test_resume_after_a_crash_equals_an_uninterrupted_run(pair, tmp_path, monkeypatch):
    source = mixed_source()
    config = small_config(pair)
    reference = build_cache(pair, config, tmp_path / "whole", source, progress=False)

    recorded = []
    real_record = writer_module.record_shard

    def crash_after_two(folder, record, *args):
        if len(recorded) == 2:  # dies after renaming shard 2, before the manifest knows it
            raise KeyboardInterrupt
        recorded.append(record["index"])
        return real_record(folder, record, *args)

    monkeypatch.setattr(writer_module, "record_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_cache(pair, config, tmp_path / "resumed", source, progress=False)
    partial = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert [s["index"] for s in partial["shards"]] == [0, 1] and not partial["complete"]
    (tmp_path / "resumed" / "shard-00003.safetensors.tmp").write_bytes(b"half a shard")
    (tmp_path / "resumed" / "shard-00004.safetensors.tmp-123-0a1b2c3d").write_bytes(b"half")
    monkeypatch.setattr(writer_module, "record_shard", real_record)

    written = []
    real_write = writer_module.write_shard_parts
    monkeypatch.setattr(
        writer_module,
        "write_shard_parts",
        lambda path, *a: written.append(path.name) or real_write(path, *a),
    )
    resumed = build_cache(pair, config, tmp_path / "resumed", source, progress=False)
    assert written == [f"shard-{i:05d}.safetensors" for i in range(2, 5)]  # only what was missing
    assert shard_shas(resumed) == shard_shas(reference)  # byte-identical shards
    assert resumed["complete"]
    np.testing.assert_allclose(resumed["stats"]["mean"], reference["stats"]["mean"], rtol=1e-12)
    assert not list((tmp_path / "resumed").glob("*.tmp*"))


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory):
    """An uninterrupted cache of `small_config`, with the manifest it returned."""
    pair = tiny_pair("gemma3")  # the same seeded weights as the `pair` fixture
    out = tmp_path_factory.mktemp("reference") / "cache"
    return out, build_cache(pair, small_config(pair), out, mixed_source(), progress=False)


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_a_rerun_rebuilds_a_damaged_shard_and_only_it(
    pair, tmp_path, monkeypatch, capsys, reference_cache, kind
):
    reference_dir, reference = reference_cache
    shutil.copytree(reference_dir, tmp_path / "c")
    name = damage_shard(tmp_path / "c", kind, index=2)
    written = []
    real_write = writer_module.write_shard_parts
    monkeypatch.setattr(
        writer_module,
        "write_shard_parts",
        lambda path, *a: written.append(path.name) or real_write(path, *a),
    )
    resumed = build_cache(pair, small_config(pair), tmp_path / "c", mixed_source(), progress=False)
    assert written == [name]
    assert f"rebuilding {name}: {DAMAGE_KINDS[kind]}" in capsys.readouterr().err
    assert shard_shas(resumed) == shard_shas(reference)  # the same bytes as before the damage
    # statistics: kept as they were, or (NaN: the manifest recorded the damaged bytes) summed
    # again over every shard in the same order, which gives the same float64 sums
    assert resumed["stats"] == reference["stats"]
    assert verify_cache(tmp_path / "c") == []


def test_a_rerun_over_a_cache_without_its_manifest_rebuilds_it_with_overwrite(
    pair, tmp_path, reference_cache
):
    reference_dir, reference = reference_cache
    shutil.copytree(reference_dir, tmp_path / "c")
    (tmp_path / "c" / "manifest.json").unlink()
    with pytest.raises(
        InterpError, match="holds shards but no manifest.json; rerun .* --overwrite"
    ):
        build_cache(pair, small_config(pair), tmp_path / "c", mixed_source(), progress=False)
    rebuilt = build_cache(
        pair, small_config(pair), tmp_path / "c", mixed_source(), progress=False, overwrite=True
    )
    assert shard_shas(rebuilt) == shard_shas(reference)
    assert verify_cache(tmp_path / "c") == []


def test_non_finite_activations_are_refused_and_never_written(pair, tmp_path, monkeypatch):
    real_rows = writer_module.BatchRunner.rows

    def rows_with_inf(self, batch):
        rows = real_rows(self, batch)
        if batch == 1:
            rows["acts"][5, 1, 0, 7] = float("inf")  # as an fp16 overflow would store it
        return rows

    monkeypatch.setattr(writer_module.BatchRunner, "rows", rows_with_inf)
    config = small_config(pair)
    with pytest.raises(InterpError, match=r"NaN or inf activations for sequence \d+ at position"):
        build_cache(pair, config, tmp_path / "c", mixed_source(), progress=False)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["shards"] == []  # batch 1 falls in the first shard: nothing was recorded
    assert not list((tmp_path / "c").glob("shard-*"))


def test_other_config_on_an_existing_folder_is_refused(pair, tmp_path):
    source = mixed_source()
    build_cache(pair, small_config(pair), tmp_path / "c", source, progress=False)
    before = (tmp_path / "c" / "manifest.json").read_bytes()
    with pytest.raises(InterpError, match=r"another config \(layers: \[1, 2\] != \[1\]\)"):
        build_cache(pair, small_config(pair, layers=[1]), tmp_path / "c", source, progress=False)
    other_texts = InMemorySource(plain={"wiki": documents(40, seed=9)}, chats=source.chats)
    with pytest.raises(InterpError, match="another token stream"):
        build_cache(pair, small_config(pair), tmp_path / "c", other_texts, progress=False)
    assert (tmp_path / "c" / "manifest.json").read_bytes() == before


def test_overwrite_replaces_a_cache_of_another_config_and_nothing_else(pair, tmp_path):
    source = mixed_source()
    build_cache(pair, small_config(pair), tmp_path / "c", source, progress=False)
    (tmp_path / "c" / "notes.txt").write_text("mine")
    config = small_config(pair, layers=[1], n_tokens=200)
    manifest = build_cache(pair, config, tmp_path / "c", source, progress=False, overwrite=True)
    assert manifest["layers"] == [1] and manifest["complete"] and manifest["n_shards"] == 2
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        ".writer.lock", "manifest.json", "notes.txt", "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]  # fmt: skip
    assert verify_cache(tmp_path / "c") == []


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(layers=[7]), "unknown layer 7"),
        (dict(layers=["middle"]), "unknown layer 'middle'"),
        (dict(n_tokens=0), "bad n_tokens 0"),
        (dict(dtype="int8"), "unknown cache dtype 'int8'"),
        (dict(mix="wiki:0.5,poems:0.5"), "unknown dataset recipe 'poems'"),
        (dict(mix="wiki:-1"), "bad mixture weight"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(pair, tmp_path, overrides, message):
    out = tmp_path / "cache"
    with pytest.raises(InterpError, match=message):
        build_cache(pair, small_config(pair, **overrides), out, mixed_source(), progress=False)
    assert not out.exists()


def test_a_recipe_with_nothing_to_cache_is_refused(pair, tmp_path):
    only_bos = InMemorySource(plain={"wiki": ["<bos>", "<bos> <bos>"]})
    config = small_config(pair, mix="wiki")
    with pytest.raises(InterpError, match="yields no tokens"):
        build_cache(pair, config, tmp_path / "c", only_bos, progress=False)
    assert not (tmp_path / "c").exists()


def test_unwritable_or_foreign_folders_are_refused(pair, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(InterpError, match="cannot write the cache folder"):
        build_cache(
            pair, small_config(pair), tmp_path / "a_file" / "c", mixed_source(), progress=False
        )
    with pytest.raises(InterpError, match="is not a folder"):
        build_cache(pair, small_config(pair), tmp_path / "a_file", mixed_source(), progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InterpError, match="holds no manifest.json"):
        build_cache(pair, small_config(pair), tmp_path / "other", mixed_source(), progress=False)
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_a_mismatched_pair_is_refused():
    from interp.models import ModelPair

    with pytest.raises(InterpError, match="mismatched pair"):
        ModelPair(base=tiny_model("llama"), chat=tiny_model("gemma3"))


def test_other_weights_on_an_existing_folder_are_refused(pair, tmp_path):
    source = mixed_source()
    build_cache(pair, small_config(pair), tmp_path / "c", source, progress=False)
    with torch.no_grad():
        pair.chat.model.get_decoder().layers[0].mlp.up_proj.weight.add_(1e-3)  # a "retrained" chat
    with pytest.raises(InterpError, match="other weights for chat model"):
        build_cache(pair, small_config(pair), tmp_path / "c", source, progress=False)


@pytest.mark.slow
def test_real_gemma_cache_skips_bos_and_matches_a_direct_forward(tmp_path):
    from interp.cache import DatasetSource
    from interp.models import ModelPair, load_model

    gemma = load_model("gemma-3-270m")
    pair = ModelPair(base=gemma, chat=gemma)  # the chat-tune may not exist; the wiring is the test
    config = cache_config(pair, [0.5], "wiki:0.5,chat:0.5", n_tokens=96, ctx=24, batch_size=4)
    source = DatasetSource()
    manifest = build_cache(pair, config, tmp_path / "c", source, progress=False)
    assert verify_cache(tmp_path / "c") == []
    cached = load_all(tmp_path / "c", manifest)
    bos = gemma.tokenizer.bos_token_id
    assert bos not in cached["token_ids"].tolist() and 0 not in cached["positions"].tolist()
    plan = token_plan(pair, config, source)
    assert all(ids[0] == bos for ids in plan.sequences)  # plain and chat documents start at BOS
    ids = plan.sequences[0]
    rows = cached["seq_ids"] == 0
    with torch.no_grad():
        hidden = gemma.model(
            torch.from_numpy(ids.astype(np.int64))[None], output_hidden_states=True
        ).hidden_states[config.layers[0] + 1][0]
    positions = cached["positions"][rows].long()
    for model_index in range(2):
        got = cached["acts"][rows][:, model_index, 0].float()
        torch.testing.assert_close(got, hidden[positions], rtol=2**-7, atol=1e-2)
