"""Latent Scaling: planted betas are recovered, the streaming closed form equals a brute-force
per-latent least squares, and the ratios are read in the coder's units (issue 15)."""

import torch

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.diffing.firings import Firings
from crosscoders.diffing.latent_scaling import (
    LatentScalingSums,
    scaling_flags,
    scaling_ratios,
)
from crosscoders.diffing.pair_dictionary import PairDictionary


def _sparse_codes(n: int, dict_size: int, generator: torch.Generator) -> torch.Tensor:
    f = torch.rand(n, dict_size, generator=generator) * 3
    return f * (torch.rand(n, dict_size, generator=generator) < 0.2)


def _stream(f, x, x_hat, W_dec, batch: int) -> LatentScalingSums:
    sums = LatentScalingSums.zeros(W_dec.shape[1])
    for start in range(0, f.shape[0], batch):
        stop = start + batch
        sums.update(Firings.of(f[start:stop]), x[start:stop], x_hat[start:stop], W_dec)
    return sums


def test_latent_scaling_recovers_planted_beta():
    generator = torch.Generator().manual_seed(0)
    n, dict_size, d = 20_000, 8, 16
    # orthogonal chat decoder rows, base decoder = planted beta * chat decoder
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
    d_chat = q[:dict_size] * (0.5 + torch.rand(dict_size, 1, generator=generator))
    planted = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, -0.3])
    W_dec = torch.stack([planted[:, None] * d_chat, d_chat])
    f = _sparse_codes(n, dict_size, generator)
    x_hat = torch.einsum("nf,mfd->nmd", f, W_dec)
    # a small error orthogonal to every decoder direction, plus the planted amount of latent 2
    # that base's dictionary shrank away (Complete Shrinkage), with a tiny isotropic noise
    noise = 1e-3 * torch.randn(n, 2, d, generator=generator)
    x = x_hat + noise
    shrunk = 0.4
    x[:, 0] += shrunk * f[:, 2:3] * d_chat[2]
    betas = _stream(f, x, x_hat, W_dec, batch=1024).betas(W_dec)
    assert torch.allclose(betas["beta_r_base"].float(), planted, atol=1e-3)
    assert torch.allclose(betas["beta_r_chat"].float(), torch.ones(dict_size), atol=1e-3)
    expected_eps_base = planted.clone()
    expected_eps_base[2] += shrunk
    assert torch.allclose(betas["beta_eps_base"].float(), expected_eps_base, atol=1e-3)
    assert torch.allclose(betas["beta_eps_chat"].float(), torch.ones(dict_size), atol=1e-3)


def test_latent_scaling_matches_bruteforce_lstsq():
    generator = torch.Generator().manual_seed(1)
    n, dict_size, d = 300, 12, 10
    W_dec = torch.randn(2, dict_size, d, generator=generator, dtype=torch.float64)
    f = _sparse_codes(n, dict_size, generator).double()
    f[:, 5] = 0  # a dead latent: beta undefined
    b_dec = torch.randn(2, d, generator=generator, dtype=torch.float64)
    x_hat = torch.einsum("nf,mfd->nmd", f, W_dec) + b_dec
    x = x_hat + 0.3 * torch.randn(n, 2, d, generator=generator, dtype=torch.float64)
    betas = _stream(f, x, x_hat, W_dec, batch=37).betas(W_dec)
    for j in range(dict_size):
        regressor = (f[:, j, None] * W_dec[1, j]).reshape(-1, 1)  # [n * d, 1]
        for m, model in enumerate(("base", "chat")):
            targets = {
                "r": x_hat[:, m],
                "eps": x[:, m] - (x_hat[:, m] - f[:, j, None] * W_dec[m, j]),
            }
            for kind, target in targets.items():
                got = betas[f"beta_{kind}_{model}"][j]
                if j == 5:
                    assert torch.isnan(got)
                    continue
                want = torch.linalg.lstsq(regressor, target.reshape(-1, 1)).solution[0, 0]
                assert torch.allclose(got, want, rtol=1e-9, atol=1e-10), (j, model, kind)


def test_scaling_flags_follow_the_chat_specific_rule():
    relative_norm = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.5, 0.95])
    betas = {
        "beta_r_base": torch.tensor([0.1, 0.1, 0.8, 0.1, 0.1, 0.1]),
        "beta_r_chat": torch.ones(6),
        "beta_eps_base": torch.tensor([0.05, 0.5, 0.05, 0.5, 0.05, torch.nan]),
        "beta_eps_chat": torch.ones(6),
    }
    ratios = scaling_ratios(betas)
    flags = scaling_flags(relative_norm, ratios["nu_r"], ratios["nu_eps"])
    assert flags["chat_specific"].tolist() == [True, False, False, False, False, False]
    assert flags["complete_shrinkage"].tolist() == [False, True, False, True, False, False]
    assert flags["latent_decoupling"].tolist() == [False, False, True, False, False, False]


def _pair_dictionary(
    W_dec: torch.Tensor, input_scale: tuple[float, float], seed: int = 0
) -> PairDictionary:
    """A relu_l1 crosscoder with a random encoder and the given decoder [base, chat] (coder
    units); its sources are stored [chat, base] to exercise the reordering."""
    _, dict_size, d = W_dec.shape
    config = CrossCoderConfig(
        n_sources=2,
        d_model=d,
        dict_size=dict_size,
        activation="relu_l1",
        sources=[Source("chat-model", 0, "chat"), Source("base-model", 0, "base")],
    )
    coder = CrossCoder(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        coder.W_enc.copy_(torch.randn(2, d, dict_size, generator=generator) / d**0.5)
        coder.b_enc.fill_(-0.5)  # sparse codes: each latent fires on part of the tokens
        coder.W_dec.copy_(W_dec[[1, 0]])
        coder.input_scale.copy_(torch.tensor(input_scale)[[1, 0]])
    dictionary = PairDictionary.from_coder(coder.eval())
    assert dictionary.order == [1, 0]
    return dictionary


def _nus(dictionary: PairDictionary, x: torch.Tensor, batch: int = 100) -> dict[str, torch.Tensor]:
    """nu_r, nu_eps of every latent over raw [base, chat] activations x, streamed as the cache
    pass does (LatentScalingSums.update_pair)."""
    sums = LatentScalingSums.zeros(dictionary.dict_size)
    for start in range(0, x.shape[0], batch):
        chunk = x[start : start + batch]
        f = dictionary.encode(chunk)
        sums.update_pair(dictionary, chunk, f, Firings.of(f))
    return scaling_ratios(sums.betas(dictionary.W_dec))


def test_shared_latents_have_nu_one_whatever_the_input_scales():
    """Issue 15: input scales [1, 2] (chat's raw activations half base's), every latent decoding
    identically into both models, both models' scaled activations equal: base holds exactly what
    chat holds, so nu_r = nu_eps = 1. (Raw units gave c_chat / c_base = 2 for every latent.)"""
    generator = torch.Generator().manual_seed(2)
    n, dict_size, d = 600, 12, 8
    shared = torch.randn(dict_size, d, generator=generator) / d**0.5
    dictionary = _pair_dictionary(torch.stack([shared, shared]), (1.0, 2.0))
    x_base = 3.0 * torch.randn(n, d, generator=generator)
    x = torch.stack([x_base, x_base / 2.0], dim=1)  # c_base x_base = c_chat x_chat
    nus = _nus(dictionary, x)
    fired = torch.isfinite(nus["nu_r"])
    assert int(fired.sum()) == dict_size  # every latent fired: each nu is tested
    # float32 sums over a few hundred tokens: a few ulps of relative error
    assert torch.allclose(nus["nu_r"], torch.ones(dict_size, dtype=torch.float64), rtol=1e-5)
    assert torch.allclose(nus["nu_eps"], torch.ones(dict_size, dtype=torch.float64), rtol=1e-5)


def test_scaling_one_models_activations_changes_no_nu():
    """Doubling base's raw activations (and halving the coder's base input scale, as the trainer's
    normalisation would) leaves the coder's inputs, codes and every nu unchanged."""
    generator = torch.Generator().manual_seed(3)
    n, dict_size, d = 600, 12, 8
    W_dec = torch.randn(2, dict_size, d, generator=generator) / d**0.5
    x = torch.randn(n, 2, d, generator=generator)
    x[:, 1] += 0.5 * x[:, 0]  # chat correlated with base, as a fine-tune's stream is
    before = _nus(_pair_dictionary(W_dec, (0.8, 1.3)), x)
    doubled = x.clone()
    doubled[:, 0] *= 2.0
    after = _nus(_pair_dictionary(W_dec, (0.4, 1.3)), doubled)
    defined = torch.isfinite(before["nu_r"])
    assert int(defined.sum()) >= dict_size - 1
    for name in ("nu_r", "nu_eps"):
        assert torch.equal(torch.isfinite(after[name]), torch.isfinite(before[name]))
        # the scaled inputs are bit-identical (x 2 then x 0.5 is exact): so is everything after
        assert torch.allclose(after[name][defined], before[name][defined], rtol=1e-9), name
