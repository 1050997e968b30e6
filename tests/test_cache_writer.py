"""The background shard writer (interp.cache.writer.ShardWriter): the bytes of a sequential
writer, the forward of the next shard overlapping the write of the last, and a failure in the
worker surfacing as one line in the caller with every earlier shard kept."""

import errno
import hashlib
import json
import threading
from pathlib import Path

import pytest
import torch
from cache_support import mixed_source
from tiny_models import tiny_pair

from interp.cache import build_cache, cache_config, verify_cache
from interp.cache import manifest as manifest_module
from interp.cache import writer as writer_module
from interp.cache.manifest import add_stats, empty_stats, shard_statistics
from interp.cache.shard import serialize_shard
from interp.cache.writer import BatchRunner, shard_metadata, stream_rows, token_plan
from interp.errors import InterpError

FIXTURE = Path(__file__).parent / "fixtures" / "cache_bytes.json"


def small_config(pair):
    return cache_config(
        pair, layers=[1, 2], mix="wiki:0.5,chat:0.5", n_tokens=600, ctx=24, batch_size=4,
        shard_tokens=128,
    )  # fmt: skip


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if not path.name.startswith(".")
    }


# the sha256 of the manifest the sequential writer of commit 15189a0 wrote: the fixture's, less
# the `model_dtype` key manifests record since
MANIFEST_OF_15189A0 = "b8f75e7204825ace3ce2da8c7168c7743c72d31d5abb19665a8ffa466594e923"


def test_the_cache_has_the_bytes_the_writer_before_the_background_stages_wrote(tmp_path):
    """tests/fixtures/cache_bytes.json holds the sha256 of every file (shards and manifest) the
    sequential writer of commit 15189a0 wrote for this config on the tiny pair, the manifest
    with `model_dtype` added (without it, the very bytes of 15189a0)."""
    pair = tiny_pair("gemma3")
    build_cache(pair, small_config(pair), tmp_path / "c", mixed_source(), progress=False)
    assert file_hashes(tmp_path / "c") == json.loads(FIXTURE.read_text())
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest.pop("model_dtype") == "fp32"
    before = (json.dumps(manifest, indent=1) + "\n").encode()  # as write_manifest writes it
    assert hashlib.sha256(before).hexdigest() == MANIFEST_OF_15189A0


def test_every_shard_and_the_manifest_are_those_of_a_sequential_writer(tmp_path):
    pair, source = tiny_pair("gemma3"), mixed_source()
    config = small_config(pair)
    out = tmp_path / "c"
    manifest = build_cache(pair, config, out, source, progress=False)
    plan = token_plan(pair, config, source)
    runner = BatchRunner(pair, plan, config.layers, config.storage_dtype)
    metadata = shard_metadata(
        [pair.base.spec, pair.chat.spec], config.layers, config.dtype, config.hash
    )
    stats = empty_stats(2, len(config.layers), pair.d_model)
    assert len(manifest["shards"]) == plan.n_shards == 5
    for index, record in enumerate(manifest["shards"]):  # one shard after the other, no thread
        start, stop = plan.shard_range(index)
        tensors = stream_rows(runner, start, stop)
        expected = serialize_shard(tensors, {**metadata, "shard_index": str(index)})
        assert (out / record["file"]).read_bytes() == expected
        assert record["sha256"] == hashlib.sha256(expected).hexdigest()
        assert record["n_bytes"] == len(expected) and record["n_tokens"] == stop - start
        stats = add_stats(stats, stop - start, *shard_statistics(tensors["acts"]))
    assert manifest["stats"] == stats  # the same float64 sums, in the same order
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_the_next_shards_forward_runs_while_a_shard_is_written(tmp_path, monkeypatch):
    """Writing shard 0 waits until the forward has produced rows of shard 1: a writer that
    wrote each shard before the next forward would wait forever (here: time out and fail)."""
    pair, source = tiny_pair("gemma3"), mixed_source()
    config = small_config(pair)
    plan = token_plan(pair, config, source)
    shard_1_batch = plan.batches_for(*plan.shard_range(1))[-1]
    reached = threading.Event()
    real_rows, real_write = BatchRunner.rows, writer_module.write_shard_parts

    def rows(self, batch):
        if batch == shard_1_batch:
            reached.set()
        return real_rows(self, batch)

    overlapped = []

    def write(path, parts):
        if path.name == "shard-00000.safetensors":
            overlapped.append(reached.wait(timeout=30))
        return real_write(path, parts)

    monkeypatch.setattr(BatchRunner, "rows", rows)
    monkeypatch.setattr(writer_module, "write_shard_parts", write)
    build_cache(pair, config, tmp_path / "c", source, progress=False)
    assert overlapped == [True]
    assert file_hashes(tmp_path / "c") == json.loads(FIXTURE.read_text())


def test_a_failed_write_is_one_line_keeps_the_earlier_shards_and_a_rerun_finishes(
    tmp_path, monkeypatch
):
    pair, source = tiny_pair("gemma3"), mixed_source()
    config = small_config(pair)
    real_write = writer_module.write_shard_parts

    def disk_full_at_shard_2(path, parts):
        if path.name == "shard-00002.safetensors":
            with open(path.with_name(path.name + ".tmp-0-00000000"), "wb") as handle:
                handle.write(parts[0])  # what a write cut short leaves: a temp file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, parts)

    monkeypatch.setattr(writer_module, "write_shard_parts", disk_full_at_shard_2)
    with pytest.raises(InterpError) as failure:
        build_cache(pair, config, tmp_path / "c", source, progress=False)
    message = str(failure.value)
    assert "\n" not in message
    assert "cannot write shard-00002.safetensors" in message
    assert "No space left on device" in message and "rerun the same command" in message
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert [shard["index"] for shard in manifest["shards"]] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "c").glob("shard-*.safetensors")) == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]  # nothing after the failed shard was written, and it exists only as a temp file
    assert verify_cache(tmp_path / "c") == [  # what was recorded is sound
        "incomplete: 2/5 shards written (rerun the same `interp cache` command to finish)"
    ]
    monkeypatch.setattr(writer_module, "write_shard_parts", real_write)
    build_cache(pair, config, tmp_path / "c", source, progress=False)
    assert file_hashes(tmp_path / "c") == json.loads(FIXTURE.read_text())


def test_a_shard_is_hashed_while_its_bytes_are_written(tmp_path, monkeypatch):
    """The write of shard 0 starts before its sha256 is finished: the hash thread and the write
    thread work on the same shard at once (a writer that hashed first would time out here)."""
    pair, source = tiny_pair("gemma3"), mixed_source()
    writing = threading.Event()
    real_hash, real_write = writer_module.parts_sha256, writer_module.write_shard_parts
    overlapped = []

    def hash_parts(parts):
        overlapped.append(writing.wait(timeout=30))
        return real_hash(parts)

    def write(path, parts):
        writing.set()
        return real_write(path, parts)

    monkeypatch.setattr(writer_module, "parts_sha256", hash_parts)
    monkeypatch.setattr(writer_module, "write_shard_parts", write)
    build_cache(pair, small_config(pair), tmp_path / "c", source, progress=False)
    assert overlapped and overlapped[0] is True
    assert file_hashes(tmp_path / "c") == json.loads(FIXTURE.read_text())


def test_the_blockwise_statistics_are_the_float64_sums_of_the_stored_values():
    """shard_sums on the CPU adds STATS_BLOCK_ROWS-row blocks: the result equals the float64
    sums of the whole shard at once (exact for bf16 values of a realistic range, so any order
    gives the same bits), for a row count that is not a multiple of the block, on 1 thread or 2."""
    generator = torch.Generator().manual_seed(0)
    n_rows = 3 * manifest_module.STATS_BLOCK_ROWS + 17
    scale = torch.logspace(-3, 2, 48)  # values over ~17 binades
    acts = (torch.randn(n_rows, 2, 1, 48, generator=generator) * scale).to(torch.bfloat16)
    values = acts.double()
    expected = (values.sum(0), values.norm(dim=-1).sum(0))
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            total, norm_total = manifest_module.shard_sums(acts)
            assert torch.equal(total, expected[0])
            # the norms are float32 (as before the blocks), their sum float64
            assert torch.allclose(norm_total, expected[1], rtol=1e-6, atol=0)
            assert torch.equal(norm_total, manifest_module.shard_sums(acts)[1])
    finally:
        torch.set_num_threads(threads)
