"""Crosscoder latent steering: add and clamp against hand computations, latent choice, KV cache,
save/load, bad input."""

import pytest
import torch
from test_steering_training import word_texts
from tiny_models import tiny_pair

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.io import save_crosscoder
from interp.errors import InterpError
from interp.generation import complete
from interp.hooks import residual_stream
from interp.tuco import tokenize_prompts
from steering.activations import encode_texts, site_activations
from steering.latent_steering import LatentSteeringMap, fit_latent_steering
from steering.methods import SteeringProblem, get_method
from steering.sites import resolve_sites
from steering.steering_map import load_map

LAYER, D, F = 2, 32, 16
TOKENS = torch.tensor([[2, 10, 11, 12, 13, 14], [2, 20, 21, 22, 23, 24]])


@pytest.fixture(scope="module")
def pair():
    return tiny_pair("gemma3")


def crosscoder(pair, activation="relu_l1", seed=0, d_model=D, layer=LAYER) -> CrossCoder:
    """A random base/chat crosscoder at `layer` with unequal input scales."""
    config = CrossCoderConfig(
        n_sources=2,
        d_model=d_model,
        dict_size=F,
        activation=activation,
        k=4,
        sources=[Source(pair.base.spec, layer, "base"), Source(pair.chat.spec, layer, "chat")],
    )
    coder = CrossCoder(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in (coder.W_enc, coder.W_dec, coder.b_enc, coder.b_dec):
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
        coder.input_scale.copy_(torch.tensor([0.5, 2.0]))
    return coder.eval()


def orthonormal_crosscoder(pair) -> CrossCoder:
    """e_j = sum_m s_m W_enc[m, :, j] = q_j and d_j = W_dec[chat, j] / s_chat = q_j with
    orthonormal q_j, and a large b_enc so every pre-activation is positive: f_j(x) = x.q_j + 50."""
    coder = crosscoder(pair)
    q, _ = torch.linalg.qr(torch.randn(D, F, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        coder.W_enc.copy_(torch.stack([q, q]) / 2.5)  # s = (0.5, 2.0): 0.5 q/2.5 + 2 q/2.5 = q
        coder.W_dec[1].copy_(2.0 * q.T)
        coder.b_enc.fill_(50.0)
    return coder


def resid(model, steering_map=None, strength=1.0, inverse=False):
    if steering_map is None:
        return residual_stream(model, TOKENS, [LAYER])[:, :, 0]
    with steering_map.apply(model, strength, inverse=inverse):
        return residual_stream(model, TOKENS, [LAYER])[:, :, 0]


def site(pair):
    return resolve_sites(pair.chat.model, "block", [LAYER])[0]


def test_add_changes_the_residual_by_exactly_strength_scale_direction(pair):
    coder = crosscoder(pair)
    steering_map = LatentSteeringMap.from_crosscoder(
        coder, 1, site(pair), [3, 7], value=[2.0, -1.0], mode="add"
    )
    # by hand: d_j = W_dec[chat, j] / s_chat
    expected_shift = 0.5 * (2.0 * coder.W_dec[1, 3] - 1.0 * coder.W_dec[1, 7]) / 2.0
    with torch.no_grad():
        shift = resid(pair.chat.model, steering_map, 0.5) - resid(pair.chat.model)
        unshift = resid(pair.chat.model, steering_map, 0.5, inverse=True) - resid(pair.chat.model)
    assert torch.allclose(shift, expected_shift.expand_as(shift), atol=1e-5)
    assert torch.allclose(unshift, -expected_shift.expand_as(shift), atol=1e-5)


def test_clamp_sets_the_latent_activation_to_the_value(pair):
    coder = orthonormal_crosscoder(pair)
    steering_map = LatentSteeringMap.from_crosscoder(
        coder, 1, site(pair), [2, 9], value=[55.0, 48.0], inverse_value=[51.0, 52.0]
    )
    with torch.no_grad():
        before = steering_map.activations(resid(pair.chat.model))
        after = steering_map.activations(resid(pair.chat.model, steering_map, 1.0))
        half = steering_map.activations(resid(pair.chat.model, steering_map, 0.5))
        inverse = steering_map.activations(resid(pair.chat.model, steering_map, 1.0, inverse=True))
        others = [j for j in range(F) if j not in (2, 9)]
        other_map = LatentSteeringMap.from_crosscoder(coder, 1, site(pair), others, [0.0] * 14)
        untouched = other_map.activations(resid(pair.chat.model, steering_map, 1.0))
    assert torch.allclose(after, torch.tensor([55.0, 48.0]).expand_as(after), atol=1e-4)
    assert torch.allclose(half, before + 0.5 * (torch.tensor([55.0, 48.0]) - before), atol=1e-4)
    assert torch.allclose(inverse, torch.tensor([51.0, 52.0]).expand_as(after), atol=1e-4)
    assert torch.allclose(untouched, other_map.activations(resid(pair.chat.model)), atol=1e-4)


@pytest.mark.parametrize("activation", ["relu_l1", "batchtopk", "jumprelu"])
def test_clamp_residual_matches_a_hand_computation_with_the_crosscoders_encoder(pair, activation):
    """Exact expected residual x + lambda sum_j (v_j - f_j(x)) d_j, with f_j from
    CrossCoder.encode (x fed to both sources, inference gates included)."""
    coder = crosscoder(pair, activation, seed=1)
    latents, values = [1, 4, 11], torch.tensor([3.0, 0.0, 1.5])
    with torch.no_grad():
        x = resid(pair.chat.model)
        both_sources = x.reshape(-1, 1, D).expand(-1, 2, -1)
        ungated = torch.relu(coder.pre_activations(coder.scale(both_sources)))[:, latents]
        # gates that drop about half the positive values (off the median value itself: no ties)
        cut = ungated[ungated > 0].median() + 1e-3
        if activation == "batchtopk":  # keep where f_j s_j > theta
            coder.get_buffer("threshold").fill_(cut * coder.decoder_norms().sum(0).median())
        if activation == "jumprelu":  # keep where f_j > threshold_j
            coder.get_buffer("jumprelu_threshold").fill_(cut)
        steering_map = LatentSteeringMap.from_crosscoder(coder, 1, site(pair), latents, values)
        f = coder.encode(both_sources)[:, latents]
        expected = x + 0.7 * (values - f.reshape(2, 6, 3)) @ (coder.W_dec[1, latents] / 2.0)
        assert torch.allclose(steering_map.activations(x).reshape(-1, 3), f, atol=1e-5)
        assert (f > 0).any()
        if activation != "relu_l1":  # the gate drops some positive pre-activations
            assert ((ungated > 0) & (f == 0)).any()
        assert torch.allclose(resid(pair.chat.model, steering_map, 0.7), expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["add", "clamp"])
def test_strength_zero_leaves_outputs_bit_identical(pair, mode):
    steering_map = LatentSteeringMap.from_crosscoder(
        crosscoder(pair), 1, site(pair), [0, 5], [4.0, 4.0], mode=mode
    )
    with torch.no_grad():
        plain = pair.chat.model(input_ids=TOKENS).logits
        with steering_map.apply(pair.chat.model, 0.0):
            steered = pair.chat.model(input_ids=TOKENS).logits
    assert torch.equal(plain, steered)


@pytest.mark.parametrize("mode", ["add", "clamp"])
def test_generate_with_kv_cache_equals_without(pair, mode):
    steering_map = LatentSteeringMap.from_crosscoder(
        crosscoder(pair), 1, site(pair), [0, 5, 6], [20.0, -20.0, 20.0], mode=mode
    )
    batch = tokenize_prompts(pair, ["w1 w2 w3", "w4 w5 w6 w7 w8 w9"], padding_side="left")
    tokens = {}
    for use_cache in (True, False):
        with steering_map.apply(pair.chat.model, 1.0):
            tokens[use_cache] = complete(pair.chat, **batch, max_new_tokens=8, use_cache=use_cache)
    assert torch.equal(tokens[True], tokens[False])
    assert not torch.equal(tokens[True], complete(pair.chat, **batch, max_new_tokens=8))


def test_fit_chooses_the_latents_with_the_largest_mean_activation_gap(tmp_path, pair):
    coder = crosscoder(pair, seed=2)
    folder = save_crosscoder(coder, tmp_path / "coder")
    source = encode_texts(pair.tokenizer, word_texts(0, 29, 6, seed=0))
    target = encode_texts(pair.tokenizer, word_texts(50, 79, 6, seed=1))
    sites = resolve_sites(pair.chat.model, "block")
    steering_map = fit_latent_steering(
        pair.chat.model, pair.chat.spec, sites, source, target, pair.base.model, folder, n_latents=3
    )
    # by hand: mean over tokens of CrossCoder.encode with the stream fed to both sources
    with torch.no_grad():
        means = []
        for model, batch in ((pair.chat.model, source), (pair.base.model, target)):
            x = site_activations(model, [site(pair)], batch, "tokens")[:, 0]
            means.append(coder.encode(x[:, None].expand(-1, 2, -1)).mean(dim=0))
    gap = (means[1] - means[0]).abs()
    chosen = gap.argsort(descending=True)[:3].tolist()
    assert steering_map.latents == chosen and steering_map.sites == [site(pair)]
    assert torch.allclose(steering_map.value, means[1][chosen], atol=1e-5)
    assert torch.allclose(steering_map.inverse_value, means[0][chosen], atol=1e-5)
    assert steering_map.crosscoder["source"] == {
        "model": pair.chat.spec,
        "layer": 2,
        "name": "chat",
    }
    assert steering_map.info["selection"].startswith("top 3 by |mean target f_j")
    given = fit_latent_steering(
        pair.chat.model, pair.chat.spec, sites, source, target, pair.base.model, folder, latents=[9]
    )
    assert given.latents == [9] and torch.allclose(given.value, means[1][[9]], atol=1e-5)


def test_save_load_round_trip(tmp_path, pair):
    coder = crosscoder(pair)
    folder = save_crosscoder(coder, tmp_path / "coder")
    saved = LatentSteeringMap.from_crosscoder(
        coder, 1, site(pair), [3, 8], [2.0, 1.0], [0.5, 0.0], mode="clamp", folder=folder
    )
    saved.save(tmp_path / "map")
    loaded = load_map(tmp_path / "map")
    assert type(loaded) is LatentSteeringMap and loaded.config() == saved.config()
    assert (
        loaded.crosscoder["folder"] == str(folder)
        and len(loaded.crosscoder["weights_sha256"]) == 64
    )
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    with torch.no_grad():
        assert torch.equal(resid(pair.chat.model, loaded, 0.8), resid(pair.chat.model, saved, 0.8))


def test_bad_input_is_a_clear_error(tmp_path, pair):
    coder = crosscoder(pair)
    with pytest.raises(InterpError, match="latent id 16 is out of range"):
        LatentSteeringMap.from_crosscoder(coder, 1, site(pair), [2, 16], [1.0, 1.0])
    with pytest.raises(InterpError, match="unknown latent steering mode"):
        LatentSteeringMap.from_crosscoder(coder, 1, site(pair), [2], [1.0], mode="scale")
    source = encode_texts(pair.tokenizer, word_texts(0, 29, 4, seed=0))
    folder = save_crosscoder(coder, tmp_path / "coder")

    def fit(sites, folder=folder, **options):
        return fit_latent_steering(
            pair.chat.model,
            pair.chat.spec,
            sites,
            source,
            source,
            pair.chat.model,
            folder,
            **options,
        )

    all_blocks = resolve_sites(pair.chat.model, "block")
    with pytest.raises(InterpError, match="latent id 99 is out of range"):
        fit(all_blocks, latents=[99])
    with pytest.raises(InterpError, match="layer mismatch"):
        fit(resolve_sites(pair.chat.model, "block", [1]))
    narrow = save_crosscoder(crosscoder(pair, d_model=16), tmp_path / "narrow")
    with pytest.raises(InterpError, match="crosscoder d_model 16 does not match"):
        fit(all_blocks, folder=narrow)
    deep = save_crosscoder(crosscoder(pair, layer=7), tmp_path / "deep")
    with pytest.raises(InterpError, match="layer 7 does not exist"):
        fit(all_blocks, folder=deep)
    with pytest.raises(InterpError, match="no single crosscoder source"):
        fit_latent_steering(
            pair.chat.model, "other-model", all_blocks, source, source, pair.chat.model, folder
        )
    narrow_map = LatentSteeringMap.from_crosscoder(
        crosscoder(pair, d_model=16), 1, site(pair), [0], [1.0]
    )
    with pytest.raises(InterpError, match="crosscoder d_model 16 does not match"):
        resid(pair.chat.model, narrow_map)


def test_registered_method_needs_a_crosscoder_and_uses_the_steered_role(tmp_path, pair):
    folder = save_crosscoder(crosscoder(pair), tmp_path / "coder")
    source = encode_texts(pair.tokenizer, word_texts(0, 29, 4, seed=0))
    problem = SteeringProblem(
        pair.base.model,
        resolve_sites(pair.base.model, "block"),
        source,
        source,
        pair.chat.model,
        model_spec="a-copy-of-the-base",  # not a recorded spec: the role names the source
        steered_role="base",
    )
    method = get_method("latents")
    with pytest.raises(InterpError, match="needs option"):
        method.fit(problem, {})
    steering_map, log = method.fit(problem, {"crosscoder": str(folder), "n_latents": 2})
    assert log is None and len(steering_map.latents) == 2 and steering_map.mode == "clamp"
    assert steering_map.crosscoder["source"]["name"] == "base"
