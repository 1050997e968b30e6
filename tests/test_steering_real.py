"""LinEAS on the real Gemma 3 270M base: two early layers only, so the forward pass stops after
block 1 and training takes seconds."""

import pytest
import torch

from interp.datasets import load_texts
from steering.activations import encode_texts
from steering.affine_map import AffineMap
from steering.evaluate import chat_texts
from steering.lineas import LinEASConfig, steered_loss, target_samples, train_lineas
from steering.sites import resolve_sites


@pytest.mark.slow
def test_real_gemma_lineas_lowers_heldout_loss_and_generates_alike_with_kv_cache():
    from interp.models import load_model

    gemma = load_model("gemma-3-270m")
    tokenizer = gemma.tokenizer
    sites = resolve_sites(gemma.model, "post-norm", layers=[0, 1])

    def batch(recipe: str, split: str):
        return encode_texts(tokenizer, chat_texts(tokenizer, load_texts(recipe, split)[:16]), 48)

    targets = target_samples(gemma.model, sites, batch("chat-benign", "train"), "mean")
    steering_map, log = train_lineas(
        gemma.model,
        sites,
        batch("harmful", "train"),
        targets,
        LinEASConfig(steps=8, lr=0.05),
        progress=False,
    )
    heldout_source = batch("harmful", "heldout")
    heldout_targets = target_samples(gemma.model, sites, batch("chat-benign", "heldout"), "mean")
    with torch.no_grad():
        before = steered_loss(
            gemma.model, AffineMap(sites, gemma.d_model), heldout_source, heldout_targets, "mean"
        )
        after = steered_loss(gemma.model, steering_map, heldout_source, heldout_targets, "mean")
    assert after < before, (before, after)
    assert log.steps[-1]["loss"] < log.steps[0]["loss"]

    prompt = heldout_source.input_ids[:1, : int(heldout_source.attention_mask[0].sum())]
    options = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad(), steering_map.apply(gemma.model, strength=1.0):
        cached = gemma.model.generate(prompt, use_cache=True, **options)
        uncached = gemma.model.generate(prompt, use_cache=False, **options)
    assert torch.equal(cached, uncached)
