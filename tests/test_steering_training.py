"""Fitting steering maps on tiny models: LinEAS, Linear-AcT, mean-difference, generation."""

import random

import torch

from steering.activations import concatenate, encode_texts, site_activations
from steering.affine_map import AffineMap
from steering.linear_act import SupportedAffineMap, fit_linear_act, transport_fit
from steering.lineas import LinEASConfig, steered_loss, target_samples, train_lineas
from steering.mean_difference import fit_mean_difference
from steering.methods import SteeringProblem, get_method
from steering.sites import resolve_sites


def word_texts(first_word: int, last_word: int, n: int, seed: int) -> list[str]:
    """`n` texts of 8 random words drawn from w<first_word>..w<last_word>."""
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randint(first_word, last_word)}" for _ in range(8)) for _ in range(n)]


def source_and_target(tokenizer, seed: int, n: int = 16):
    source = encode_texts(tokenizer, word_texts(0, 29, n, seed))
    target = encode_texts(tokenizer, word_texts(50, 79, n, seed + 1))
    return source, target


def logits_of(model, steering_map):
    tokens = torch.tensor([[10, 11, 12, 13]])
    if steering_map is None:
        return model(input_ids=tokens).logits
    with steering_map.apply(model):
        return model(input_ids=tokens).logits


def test_lineas_training_lowers_the_loss_on_heldout_prompts(tiny):
    sites = resolve_sites(tiny.model, "post-norm")
    # 48 samples a side: two samples of one distribution are then close in W2 (the floor)
    source, target = source_and_target(tiny.tokenizer, seed=0, n=48)
    heldout_source, heldout_target = source_and_target(tiny.tokenizer, seed=100, n=48)
    config = LinEASConfig(steps=60, lr=0.05, seed=0)
    steering_map, log = train_lineas(
        tiny.model,
        sites,
        source,
        target_samples(tiny.model, sites, target, "mean"),
        config,
        progress=False,
    )
    heldout_targets = target_samples(tiny.model, sites, heldout_target, "mean")
    with torch.no_grad():
        identity = AffineMap(sites, 32)
        before = steered_loss(tiny.model, identity, heldout_source, heldout_targets, "mean")
        after = steered_loss(tiny.model, steering_map, heldout_source, heldout_targets, "mean")
    assert after < 0.5 * before, (before, after)
    assert log.steps[-1]["loss"] < log.steps[0]["loss"]
    assert log.steps[-1]["lr"] < config.lr / 100  # cosine decay to ~0
    assert all(parameter.requires_grad for parameter in tiny.model.parameters())  # restored


def test_lineas_sparsity_removes_sites_and_neurons(tiny):
    sites = resolve_sites(tiny.model, "post-norm")
    source, target = source_and_target(tiny.tokenizer, seed=0)
    targets = target_samples(tiny.model, sites, target, "mean")
    _, dense_log = train_lineas(
        tiny.model, sites, source, targets, LinEASConfig(steps=30, lr=0.05), progress=False
    )
    # With Adam every step moves a neuron by ~lr, the prox pulls it back by lr * gamma: gamma < 1
    # keeps the neurons whose gradient sign is consistent, gamma = 1 zeroes every site.
    _, sparse_log = train_lineas(
        tiny.model,
        sites,
        source,
        targets,
        LinEASConfig(steps=30, lr=0.05, sparsity=0.6),
        progress=False,
    )
    empty, _ = train_lineas(
        tiny.model,
        sites,
        source,
        targets,
        LinEASConfig(steps=5, lr=0.05, sparsity=1.0),
        progress=False,
    )
    assert dense_log.steps[-1]["active_neurons"] == len(sites) * 32
    assert 0 < sparse_log.steps[-1]["active_neurons"] < len(sites) * 32
    assert empty.active_sites() == []
    with torch.no_grad():
        assert torch.equal(logits_of(tiny.model, empty), logits_of(tiny.model, None))


def test_steered_generation_is_the_same_with_and_without_kv_cache(tiny):
    sites = resolve_sites(tiny.model, "post-norm")
    source, target = source_and_target(tiny.tokenizer, seed=0)
    steering_map, _ = train_lineas(
        tiny.model,
        sites,
        source,
        target_samples(tiny.model, sites, target, "mean"),
        LinEASConfig(steps=20, lr=0.05),
        progress=False,
    )
    prompt = source.input_ids[:2]
    options = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        plain = tiny.model.generate(prompt, **options)
        with steering_map.apply(tiny.model, strength=1.0):
            cached = tiny.model.generate(prompt, use_cache=True, **options)
            uncached = tiny.model.generate(prompt, use_cache=False, **options)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)  # the map does change what is generated


def test_linear_act_fits_each_site_on_inputs_steered_by_the_earlier_sites(tiny):
    sites = resolve_sites(tiny.model, "post-norm")
    source, target = source_and_target(tiny.tokenizer, seed=0)
    targets = target_samples(tiny.model, sites, target, "mean")
    steering_map = fit_linear_act(tiny.model, sites, source, targets)
    last = len(sites) - 1
    # the input of the last site's map: every earlier map applied, the last one switched off
    with torch.no_grad():
        fitted = steering_map.scale_offset[last].clone(), steering_map.bias[last].clone()
        steering_map.scale_offset[last] = 0
        steering_map.bias[last] = 0
        with steering_map.apply(tiny.model):
            samples = site_activations(tiny.model, sites, source)[:, last]
    scale, shift = transport_fit(samples, targets[:, last])
    assert torch.allclose(fitted[0] + 1, scale, atol=1e-5)
    assert torch.allclose(fitted[1], shift, atol=1e-5)
    unsteered = target_samples(tiny.model, sites, source, "mean")[:, last]
    assert not torch.allclose(samples, unsteered, atol=1e-3)  # earlier sites did matter


def test_linear_act_same_model_recomputes_the_targets_with_the_upstream_maps(tiny):
    """ml-act's `incr`: the map of site 1 is fitted on source AND target samples taken with the
    map of site 0 installed (hand-built sequential fit)."""
    sites = resolve_sites(tiny.model, "post-norm", layers=[0])  # two sites, in forward order
    assert len(sites) == 2
    rng = random.Random(1)
    source = encode_texts(tiny.tokenizer, word_texts(0, 59, 24, seed=0))
    # shorter target texts: the joint pass pads them; overlapping words: the target samples
    # fall inside the source range, where the map of site 0 acts on them
    target = encode_texts(
        tiny.tokenizer, [" ".join(f"w{rng.randint(20, 79)}" for _ in range(5)) for _ in range(24)]
    )
    # hand-built: fit site 0 on unsteered samples, install it, then fit site 1 on both sides
    by_hand = SupportedAffineMap(sites, width=32)
    with torch.no_grad():
        source_0 = site_activations(tiny.model, sites, source)[:, 0]
        target_0 = site_activations(tiny.model, sites, target)[:, 0]
        scale, shift = transport_fit(source_0, target_0)
        by_hand.scale_offset[0], by_hand.bias[0] = scale - 1, shift
        by_hand.lower[0], by_hand.upper[0] = source_0.min(0).values, source_0.max(0).values
        with by_hand.apply(tiny.model):
            source_1 = site_activations(tiny.model, sites, source)[:, 1]
            target_1 = site_activations(tiny.model, sites, target)[:, 1]
        scale_1, shift_1 = transport_fit(source_1, target_1)
        unsteered_target_1 = site_activations(tiny.model, sites, target)[:, 1]
    assert not torch.allclose(target_1, unsteered_target_1, atol=1e-3)  # site 0 changed them

    fitted = fit_linear_act(tiny.model, sites, source, target)
    # float32 forwards of the same rows in a differently padded batch: ~1e-6 apart; the fit
    # divides by per-neuron variances of O(1e-1), so 1e-4 bounds the difference with margin
    assert torch.allclose(fitted.scale[0], scale, atol=1e-4)
    assert torch.allclose(fitted.scale[1], scale_1, atol=1e-4)
    assert torch.allclose(fitted.bias[1], shift_1, atol=1e-4)
    assert torch.allclose(fitted.lower[1], source_1.min(0).values, atol=1e-4)
    # the fixed, unsteered targets (the cross-model case) give another map at site 1
    fixed = fit_linear_act(
        tiny.model, sites, source, target_samples(tiny.model, sites, target, "mean")
    )
    assert not torch.allclose(fixed.bias[1], fitted.bias[1], atol=1e-3)
    assert fitted.info["targets_recomputed"] and not fixed.info["targets_recomputed"]
    # the method registry takes the same-model path when the target model is the steered one
    problem = SteeringProblem(tiny.model, sites, source, target, tiny.model)
    registered, _ = get_method("linear-act").fit(problem, {})
    assert torch.allclose(registered.bias[1], fitted.bias[1], atol=1e-6)


def test_concatenate_pads_rows_without_changing_their_samples(tiny):
    sites = resolve_sites(tiny.model, "post-norm")
    short = encode_texts(tiny.tokenizer, word_texts(0, 29, 3, seed=0))
    long = encode_texts(tiny.tokenizer, [text + " w5 w6 w7" for text in word_texts(0, 29, 2, 1)])
    joint = concatenate(short, long)
    assert joint.input_ids.shape == (5, long.input_ids.shape[1])
    assert not joint.sample_mask[:3, short.input_ids.shape[1] :].any()
    with torch.no_grad():
        together = site_activations(tiny.model, sites, joint, "tokens")
        apart = torch.cat([site_activations(tiny.model, sites, b, "tokens") for b in (short, long)])
    assert torch.allclose(together, apart, atol=1e-5)


def test_mean_difference_moves_the_source_mean_onto_the_target_mean(tiny):
    sites = resolve_sites(tiny.model, "block", layers=[0.5])
    source, target = source_and_target(tiny.tokenizer, seed=0)
    targets = target_samples(tiny.model, sites, target, "mean")
    steering_map = fit_mean_difference(tiny.model, sites, source, targets)
    with torch.no_grad(), steering_map.apply(tiny.model, strength=1.0):
        steered = site_activations(tiny.model, sites, source)
    assert torch.allclose(steered.mean(dim=0), targets.mean(dim=0), atol=1e-5)
