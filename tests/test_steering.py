"""Steering maps: the W2 loss, the proximal step, strengths, inverses, sites, save/load."""

import pytest
import torch
from tiny_models import tiny_model

from interp.errors import InterpError
from steering.activations import pool
from steering.affine_map import AffineMap
from steering.linear_act import SupportedAffineMap, transport_fit
from steering.lineas import proximal_sparse_group_lasso
from steering.mean_difference import AdditiveMap
from steering.sites import resolve_sites
from steering.steering_map import load_map
from steering.wasserstein import distributional_loss, per_neuron_w2

TOKENS = torch.tensor([[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]])


def logits(model, steering_map=None, strength=1.0, **apply_options):
    with torch.no_grad():
        if steering_map is None:
            return model(input_ids=TOKENS).logits
        with steering_map.apply(model, strength, **apply_options):
            return model(input_ids=TOKENS).logits


def random_affine(sites, width=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    steering_map = AffineMap(sites, width)
    with torch.no_grad():
        steering_map.scale_offset.copy_(0.3 * torch.randn(len(sites), width, generator=generator))
        steering_map.bias.copy_(0.3 * torch.randn(len(sites), width, generator=generator))
    return steering_map


def test_w2_matches_hand_computation():
    # neuron 0: sorted (1, 2, 3) vs (0, 2, 4) -> (1 + 0 + 1) / 3; neuron 1: (5, 5, 5) vs (5, 6, 7)
    # -> (0 + 1 + 4) / 3
    source = torch.tensor([[3.0, 5.0], [1.0, 5.0], [2.0, 5.0]])
    target = torch.tensor([[0.0, 7.0], [4.0, 5.0], [2.0, 6.0]])
    assert torch.allclose(per_neuron_w2(source, target), torch.tensor([2 / 3, 5 / 3]))
    sites_stacked = torch.stack([source, 2 * source], dim=1)  # [n, 2 sites, 2 neurons]
    targets_stacked = torch.stack([target, 2 * source], dim=1)
    assert torch.isclose(distributional_loss(sites_stacked, targets_stacked), torch.tensor(7 / 3))


def test_w2_with_unequal_counts_uses_target_quantiles_at_source_levels():
    # source levels 1/4, 3/4; target order statistics sit at 1/8, 3/8, 5/8, 7/8, so its quantile
    # function reads 0.5 and 2.5 there: ((0 - 0.5)^2 + (1 - 2.5)^2) / 2 = 1.25
    source = torch.tensor([[1.0], [0.0]])
    target = torch.tensor([[3.0], [0.0], [2.0], [1.0]])
    assert torch.allclose(per_neuron_w2(source, target), torch.tensor([1.25]))


def test_w2_gradient_reaches_every_source_sample():
    source = torch.tensor([[3.0], [1.0], [2.0]], requires_grad=True)
    per_neuron_w2(source, torch.tensor([[0.0], [2.0], [4.0]])).sum().backward()
    # d/du of (1/3) sum (u_(i) - v_(i))^2 = (2/3)(u - matched v): 3->4, 1->0, 2->2
    assert torch.allclose(source.grad, torch.tensor([[-2 / 3], [2 / 3], [0.0]]))


def test_proximal_step_zeroes_exactly_the_groups_under_the_threshold():
    scale_offset = torch.tensor([[0.9, -0.05], [0.4, 0.3], [0.05, -0.08]])
    bias = torch.tensor([[0.3, 0.0], [-0.3, 0.1], [0.0, 0.1]])
    proximal_sparse_group_lasso(scale_offset, bias, l1_threshold=0.1, group_threshold=0.5)
    # site 0: soft-threshold -> (0.8, 0, 0.2, 0), norm sqrt(0.68) > 0.5, shrink 1 - 0.5/sqrt(0.68)
    shrink = 1 - 0.5 / 0.68**0.5
    assert torch.allclose(scale_offset[0], torch.tensor([0.8 * shrink, 0.0]))
    assert torch.allclose(bias[0], torch.tensor([0.2 * shrink, 0.0]))
    # site 1: (0.3, 0.2, -0.2, 0) has norm sqrt(0.17) < 0.5 -> the whole group is zero
    # site 2: every entry is under the L1 threshold -> zero
    assert torch.equal(scale_offset[1:], torch.zeros(2, 2))
    assert torch.equal(bias[1:], torch.zeros(2, 2))


def test_strength_zero_leaves_outputs_bit_identical(tiny_any):
    sites = resolve_sites(tiny_any.model, "post-norm")
    steering_map = random_affine(sites)
    plain = logits(tiny_any.model)
    assert torch.equal(logits(tiny_any.model, steering_map, strength=0.0), plain)
    assert not torch.allclose(logits(tiny_any.model, steering_map, strength=1.0), plain)


def test_unit_scale_zero_bias_is_the_identity(tiny):
    sites = resolve_sites(tiny.model, "post-norm")
    identity = AffineMap(sites, 32)
    plain = logits(tiny.model)
    assert torch.equal(logits(tiny.model, identity, skip_identity_sites=False), plain)
    z = torch.randn(3, 5, 32)
    assert torch.equal(identity.steer(2, z, 0.7), z)


def test_strength_interpolates_between_identity_and_map():
    steering_map = random_affine(["a", "b"], width=4)
    z = torch.randn(6, 4)
    full = steering_map.steer(1, z, 1.0)
    w = 1 + steering_map.scale_offset[1]
    assert torch.allclose(full, w * z + steering_map.bias[1])
    assert torch.allclose(steering_map.steer(1, z, 0.25), z + 0.25 * (full - z))


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_inverse_undoes_the_map(strength):
    z = torch.randn(4, 7, 32)
    affine = random_affine(["a", "b"])
    assert torch.allclose(affine.invert(1, affine.steer(1, z, strength), strength), z, atol=1e-5)
    additive = AdditiveMap(["a"], 32)
    additive.vector.data.normal_()
    assert torch.allclose(
        additive.invert(0, additive.steer(0, z, strength), strength), z, atol=1e-6
    )


def test_inverse_at_full_strength_is_z_minus_b_over_w():
    affine = random_affine(["a"], width=4)
    y = torch.randn(3, 4)
    expected = (y - affine.bias[0]) / (1 + affine.scale_offset[0])
    assert torch.allclose(affine.invert(0, y, 1.0), expected)


def test_inverse_applied_to_a_model_undoes_the_forward_map(tiny):
    sites = resolve_sites(tiny.model, "block", layers=[1])
    steering_map = random_affine(sites)
    # hooks run in registration order: the map, then its inverse, on the same block output
    with steering_map.apply(tiny.model), steering_map.apply(tiny.model, inverse=True):
        restored = logits(tiny.model)
    assert torch.allclose(restored, logits(tiny.model), atol=1e-4)


def test_linear_act_map_passes_values_outside_the_source_range_unchanged():
    steering_map = SupportedAffineMap(["a"], width=2)
    with torch.no_grad():
        steering_map.scale_offset.fill_(1.0)  # w = 2
        steering_map.bias.fill_(1.0)
        steering_map.lower.copy_(torch.tensor([[0.0, -1.0]]))
        steering_map.upper.copy_(torch.tensor([[1.0, 1.0]]))
    z = torch.tensor([[0.5, 2.0], [-0.5, 0.0], [1.0, -1.0]])
    expected = torch.tensor([[2.0, 2.0], [-0.5, 1.0], [1.0, -1.0]])
    assert torch.equal(steering_map.steer(0, z, 1.0), expected)


def test_linear_act_has_no_inverse(tiny):
    steering_map = SupportedAffineMap(resolve_sites(tiny.model, "block"), 32)
    with pytest.raises(InterpError, match="no inverse"):
        with steering_map.apply(tiny.model, inverse=True):
            pass


def test_transport_fit_recovers_a_planted_affine_map_from_unpaired_samples():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=generator)
    shuffle = torch.randperm(200, generator=generator)
    y = (torch.tensor([2.0, 0.5, 1.0]) * x + torch.tensor([3.0, 0.0, -1.0]))[shuffle]
    scale, shift = transport_fit(x, y)  # sorting undoes the shuffle: the monotone OT map
    assert torch.allclose(scale, torch.tensor([2.0, 0.5, 1.0]), atol=1e-5)
    assert torch.allclose(shift, torch.tensor([3.0, 0.0, -1.0]), atol=1e-5)


@pytest.mark.parametrize("steering_map", ["affine", "supported-affine", "additive"])
def test_save_load_round_trip(tmp_path, tiny, steering_map):
    sites = resolve_sites(tiny.model, "post-norm", layers=[0, -1])
    saved = {
        "affine": random_affine(sites),
        "supported-affine": SupportedAffineMap(sites, 32, info={"note": "x"}),
        "additive": AdditiveMap(sites, 32),
    }[steering_map]
    with torch.no_grad():
        for parameter in saved.parameters():
            parameter.normal_()
    saved.save(tmp_path / "map")
    loaded = load_map(tmp_path / "map")
    assert type(loaded) is type(saved) and loaded.sites == sites and loaded.info == saved.info
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert torch.equal(logits(tiny.model, loaded), logits(tiny.model, saved))


def test_load_rejects_a_folder_without_a_map(tmp_path):
    with pytest.raises(InterpError, match="not a steering map folder"):
        load_map(tmp_path)


def test_post_norm_sites_per_architecture():
    gemma, llama = tiny_model("gemma3").model, tiny_model("llama").model
    assert resolve_sites(gemma, "post-norm", layers=[1]) == [
        "model.layers.1.post_attention_layernorm",
        "model.layers.1.post_feedforward_layernorm",
    ]
    assert resolve_sites(llama, "post-norm", layers=[-1]) == [
        "model.layers.3.input_layernorm",
        "model.layers.3.post_attention_layernorm",
    ]
    assert resolve_sites(gemma, "block", layers=[0.5]) == ["model.layers.2"]
    assert len(resolve_sites(gemma, "post-norm")) == 8
    assert resolve_sites(llama, r"re:model\.layers\.[02]\.mlp") == [
        "model.layers.0.mlp",
        "model.layers.2.mlp",
    ]
    with pytest.raises(InterpError, match="unknown site kind"):
        resolve_sites(gemma, "attention")


def test_map_for_another_architecture_is_refused():
    gemma, llama = tiny_model("gemma3").model, tiny_model("llama").model
    steering_map = AffineMap(resolve_sites(gemma, "post-norm", layers=[0]), 32)
    with pytest.raises(InterpError, match="not a module"):
        with steering_map.apply(llama, skip_identity_sites=False):
            pass


def test_pooling_mean_last_and_tokens_by_hand():
    acts = torch.arange(12.0).reshape(2, 3, 1, 2)  # [batch 2, seq 3, 1 site, d 2]
    mask = torch.tensor([[True, True, False], [False, True, True]])
    assert torch.equal(pool(acts, mask, "mean")[:, 0], torch.tensor([[1.0, 2.0], [9.0, 10.0]]))
    assert torch.equal(pool(acts, mask, "last")[:, 0], torch.tensor([[2.0, 3.0], [10.0, 11.0]]))
    assert pool(acts, mask, "tokens").shape == (4, 1, 2)
