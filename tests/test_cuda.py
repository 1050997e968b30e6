"""The accelerator paths, run where a CUDA device exists (skipped elsewhere, e.g. in CI): the
activation cache, the TuCo decomposition and LinEAS training give on CUDA what they give on the
CPU. (Crosscoder training on CUDA: tests/test_trainer.py.) `INTERP_TEST_DEVICE=cpu` runs the
same checks on the CPU, to test the tests."""

import os

import numpy as np
import pytest
import torch
from cache_support import mixed_source
from safetensors.torch import load_file
from tiny_models import tiny_model, tiny_pair

from interp.cache import build_cache, cache_config, verify_cache
from interp.cache.manifest import stats_of_shards
from interp.models import ModelPair
from interp.tuco import decompose, tokenize_prompts
from steering.activations import encode_texts
from steering.lineas import LinEASConfig, target_samples, train_lineas
from steering.sites import resolve_sites

DEVICE = os.environ.get("INTERP_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
)


def on_cuda(pair: ModelPair) -> ModelPair:
    for loaded in pair:
        loaded.model.to(DEVICE)
    return pair


def test_cache_on_cuda_equals_the_cache_on_cpu(tmp_path):
    """Also the writer's CUDA path (shards assembled on the GPU, statistics computed there, one
    asynchronous copy per shard into reused pinned buffers): five shards, each sound, and the
    manifest's statistics those of the stored values."""
    pair, source = tiny_pair("gemma3"), mixed_source()
    config = cache_config(
        pair, layers=[1, 2], mix="wiki:0.5,chat:0.5", n_tokens=300, ctx=24, shard_tokens=64
    )
    cpu_manifest = build_cache(pair, config, tmp_path / "cpu", source, progress=False)
    cuda_manifest = build_cache(on_cuda(pair), config, tmp_path / "cuda", source, progress=False)
    assert len(cuda_manifest["shards"]) == 5 and cuda_manifest["complete"]
    assert verify_cache(tmp_path / "cuda") == []
    recomputed = stats_of_shards(tmp_path / "cuda", cuda_manifest)
    for key in ("mean", "mean_norm"):
        np.testing.assert_allclose(cuda_manifest["stats"][key], recomputed[key], rtol=1e-6)
    for record in cpu_manifest["shards"]:
        cpu = load_file(tmp_path / "cpu" / record["file"])
        cuda = load_file(tmp_path / "cuda" / record["file"])
        assert torch.equal(cpu["token_ids"], cuda["token_ids"])
        torch.testing.assert_close(cuda["acts"].float(), cpu["acts"].float(), rtol=2**-6, atol=1e-3)


def test_tuco_components_on_cuda_sum_to_the_finetuned_forward():
    pair = on_cuda(tiny_pair("gemma3"))
    batch = tokenize_prompts(pair, ["w1 w2 w3", "w4 w5 w6 w7 w8"], padding_side="right")
    ids, mask = batch["input_ids"].to(DEVICE), batch["attention_mask"].to(DEVICE)
    parts = decompose(pair, ids, mask)
    hidden = pair.chat.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    final = parts.embeddings + parts.pretrained_sum + parts.finetuning_sum
    assert parts.finetuning_sum.device.type == torch.device(DEVICE).type
    # the last block's output before the final norm: compare through the final norm
    normed = pair.chat.model.model.norm(final)
    assert (normed - hidden)[mask.bool()].abs().max() < 1e-3


def test_lineas_trains_on_cuda_and_lowers_its_loss():
    tiny = tiny_model("gemma3")
    tiny.model.to(DEVICE)
    sites = resolve_sites(tiny.model, "post-norm")
    source = encode_texts(tiny.tokenizer, [f"w{i} w{i + 1} w{i + 2}" for i in range(16)])
    target = encode_texts(tiny.tokenizer, [f"w{50 + i} w{51 + i} w{52 + i}" for i in range(16)])
    steering_map, log = train_lineas(
        tiny.model, sites, source, target_samples(tiny.model, sites, target, "mean"),
        LinEASConfig(steps=30, lr=0.05, seed=0), progress=False,
    )  # fmt: skip
    assert log.steps[-1]["loss"] < 0.5 * log.steps[0]["loss"]
    with steering_map.apply(tiny.model):
        out = tiny.model.generate(torch.tensor([[10, 11, 12]], device=DEVICE), max_new_tokens=4)
    assert out.shape == (1, 7)
