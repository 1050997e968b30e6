"""Latent Scaling: planted betas are recovered, and the streaming closed form equals a brute-force
per-latent least squares."""

import torch

from crosscoders.diffing.firings import Firings
from crosscoders.diffing.latent_scaling import (
    LatentScalingSums,
    scaling_flags,
    scaling_ratios,
)


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
