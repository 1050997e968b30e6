"""The crosscoder's math against hand computations: shapes, sparsifiers, losses, norms, init."""

import math

import pytest
import torch

from crosscoders.config import CrossCoderConfig, Source, TrainingConfig
from crosscoders.crosscoder import CrossCoder
from crosscoders.decoder_norms import latent_classes, relative_decoder_norm
from crosscoders.init import geometric_median, initialize
from crosscoders.io import load_crosscoder, save_crosscoder
from crosscoders.losses import auxk_loss, fraction_of_variance_explained, reconstruction_loss
from crosscoders.trainer import learning_rate
from interp.errors import InterpError


def make_coder(activation: str = "batchtopk", S: int = 2, d: int = 8, F: int = 16, k: int = 3):
    coder = CrossCoder(
        CrossCoderConfig(n_sources=S, d_model=d, dict_size=F, activation=activation, k=k)
    )
    sample = torch.randn(256, S, d, generator=torch.Generator().manual_seed(0))
    initialize(coder, sample, torch.Generator().manual_seed(1))
    return coder


def test_relative_decoder_norm_matches_hand_values():
    base = torch.tensor([1.0, 0.0, 2.0, 3.0, 0.0])
    chat = torch.tensor([0.0, 1.0, 1.0, 3.0, 0.0])
    delta = relative_decoder_norm(base, chat)
    # 0.5 * (1 + (c - b) / max): base-only 0, chat-only 1, 0.5 * (1 - 1/2) = 0.25, equal 0.5,
    # both 0 -> 0.5
    torch.testing.assert_close(delta, torch.tensor([0.0, 1.0, 0.25, 0.5, 0.5]))
    assert latent_classes(delta) == ["base_only", "chat_only", "other", "shared", "shared"]


def test_reconstruction_loss_sums_sources_and_means_batch():
    x = torch.zeros(2, 2, 3)
    x_hat = torch.zeros(2, 2, 3)
    x_hat[0, 0, 0] = 1.0  # token 0: error 1 in source 0
    x_hat[0, 1, 2] = 2.0  # token 0: error 2 in source 1 -> squared sum 1 + 4 = 5
    x_hat[1, 1, 1] = 3.0  # token 1: squared 9
    assert reconstruction_loss(x, x_hat).item() == pytest.approx((5 + 9) / 2)


def test_auxk_loss_is_normalised_by_error_variance():
    error = torch.tensor([[[1.0, 0.0]], [[3.0, 2.0]]])  # [batch=2, S=1, d=2], mean (2, 1)
    error_hat = torch.tensor([[[1.0, 1.0]], [[2.0, 2.0]]])
    numerator = (0 + 1) + (1 + 0)
    denominator = (1 + 1) + (1 + 1)
    assert auxk_loss(error, error_hat).item() == pytest.approx(numerator / denominator)


def test_fve_is_one_minus_residual_over_total_variance():
    x = torch.tensor([[[0.0, 0.0]], [[2.0, 4.0]]])  # var per dim: 1, 4 -> total 5
    x_hat = torch.tensor([[[0.0, 1.0]], [[2.0, 3.0]]])  # error (0,-1), (0,1): var 0 + 1
    assert fraction_of_variance_explained(x, x_hat).item() == pytest.approx(1 - 1 / 5)


def test_batch_topk_keeps_exactly_k_times_batch_and_the_largest_scores():
    coder = make_coder("batchtopk", k=3).train()
    x = torch.randn(10, 2, 8)
    f_relu = torch.relu(coder.pre_activations(coder.scale(x)))
    selection = coder.select(f_relu)
    code = coder.encode(x)
    assert int((code != 0).sum()) == 3 * 10
    g = f_relu * coder.decoder_norms().sum(0)
    kept_g = g[code != 0]
    assert kept_g.min() >= g[code == 0].max()
    torch.testing.assert_close(selection.min_kept_g, kept_g.min())
    # decoding uses the unscaled f
    torch.testing.assert_close(code[code != 0], f_relu[code != 0])
    assert coder.loss(x).l0.item() == 3


def test_batch_topk_inference_uses_theta_per_token():
    coder = make_coder("batchtopk", k=3).eval()
    coder.get_buffer("threshold").fill_(0.5)
    x = torch.randn(6, 2, 8)
    g = torch.relu(coder.pre_activations(coder.scale(x))) * coder.decoder_norms().sum(0)
    f = coder.encode(x)
    assert torch.equal(f != 0, g > 0.5)
    # batch-independent: encoding one token alone gives the same code
    torch.testing.assert_close(coder.encode(x[:1]), f[:1])


def test_topk_keeps_k_per_token():
    coder = make_coder("topk", k=4)
    f = coder.encode(torch.randn(7, 2, 8))
    assert ((f != 0).sum(-1) == 4).all()


def test_relu_l1_loss_has_decoder_weighted_penalty():
    coder = make_coder("relu_l1")
    x = torch.randn(5, 2, 8)
    out = coder.loss(x)
    s = coder.decoder_norms().sum(0)
    expected = coder.config.l1_coefficient * (coder.encode(x) * s).sum(-1).mean()
    torch.testing.assert_close(out.terms["l1"], expected)
    torch.testing.assert_close(out.total, out.terms["reconstruction"] + expected)


def hand_coder(activation: str, k: int = 2) -> CrossCoder:
    """S = 2 sources, d = 2, F = 2; W_enc^m = I, b_enc = b_dec = 0, input scale 1; latent 0
    decodes to (1, 0) in source 0 only, latent 1 to (0, 2) in source 1 only: s = (1, 2)."""
    coder = CrossCoder(CrossCoderConfig(2, 2, 2, activation=activation, k=k, l1_coefficient=0.041))
    with torch.no_grad():
        coder.W_enc.copy_(torch.eye(2).expand(2, 2, 2))
        coder.W_dec.copy_(torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]]))
    return coder


# token 0: x = ((1, 0), (0, 0)) -> f = (1, 0), x^ = x (error 0 in both sources)
# token 1: x = ((0, 1), (3, 1)) -> f = (3, 2), x^ = ((3, 0), (0, 4)): e = ((-3, 1), (3, -3))
HAND_X = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [3.0, 1.0]]])


def test_relu_l1_loss_is_the_reference_formula_on_a_hand_batch():
    """crosscoder_learning's CrossCoderTrainer.loss: mean over batch and sources of the UN-squared
    ||e||_2, plus mu * mean_n sum_j f_j s_j, and no AuxK (even with every latent dead)."""
    coder = hand_coder("relu_l1")
    out = coder.loss(HAND_X, dead=torch.ones(2, dtype=torch.bool))
    reconstruction = (0 + 0 + math.sqrt(10) + math.sqrt(18)) / 4  # 4 = 2 tokens x 2 sources
    l1 = 0.041 * ((1 * 1 + 0 * 2) + (3 * 1 + 2 * 2)) / 2
    assert set(out.terms) == {"reconstruction", "l1"}
    assert out.terms["reconstruction"].item() == pytest.approx(reconstruction, rel=1e-6)
    assert out.terms["l1"].item() == pytest.approx(l1, rel=1e-6)
    assert out.total.item() == pytest.approx(reconstruction + l1, rel=1e-6)


def test_relu_l1_loss_is_homogeneous_in_the_input_scale():
    """Both terms scale like ||x|| (no biases), so mu means the same at any activation scale."""
    coder = make_coder("relu_l1")
    with torch.no_grad():
        coder.b_enc.zero_()
        coder.b_dec.zero_()
    x = torch.randn(16, 2, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(coder.loss(7.0 * x).total, 7.0 * coder.loss(x).total)


def test_top_k_kinds_keep_the_squared_loss_and_auxk():
    coder = hand_coder("topk", k=2)  # k = F: the code is f, as above
    out = coder.loss(HAND_X, dead=torch.ones(2, dtype=torch.bool))
    assert set(out.terms) == {"reconstruction", "auxk"}
    assert out.terms["reconstruction"].item() == pytest.approx((0 + 10 + 18) / 2, rel=1e-6)


def test_batch_topk_cutoff_of_zero_is_never_theta():
    """k * B = 4 kept entries wanted, but g = f * s = (1, 0), (3, 4) has 3 positive ones: the
    4th largest g is 0. Every positive g is kept and theta gets the smallest of them (1), as the
    reference's min over the positive kept values; a batch with no positive g leaves theta."""
    coder = hand_coder("batchtopk", k=2).train()
    coder.config.threshold_start_step = 0
    out = coder.loss(HAND_X)
    assert out.l0.item() == pytest.approx(3 / 2)
    assert out.min_kept_g.item() == pytest.approx(1.0)
    coder.update_inference_threshold(out.min_kept_g, step=0)
    assert coder.get_buffer("threshold").item() == pytest.approx(1.0)
    assert coder.select(torch.zeros(2, 2)).min_kept_g is None  # nothing positive
    coder.update_inference_threshold(None, step=1)
    coder.update_inference_threshold(torch.tensor(0.0), step=2)
    assert coder.get_buffer("threshold").item() == pytest.approx(1.0)


def test_threshold_ema_starts_after_warmup_and_follows_beta():
    coder = CrossCoder(CrossCoderConfig(2, 4, 8, k=2, threshold_start_step=3, threshold_beta=0.9))
    coder.update_inference_threshold(torch.tensor(5.0), step=2)
    assert coder.get_buffer("threshold").item() == -1.0  # not yet
    coder.update_inference_threshold(torch.tensor(5.0), step=3)
    assert coder.get_buffer("threshold").item() == 5.0  # first value taken directly
    coder.update_inference_threshold(torch.tensor(1.0), step=4)
    assert coder.get_buffer("threshold").item() == pytest.approx(0.9 * 5 + 0.1 * 1)


def test_init_decoder_is_encoder_transpose_with_given_norm():
    config = CrossCoderConfig(2, 8, 16, decoder_init_norm=0.005, activation="relu_l1")
    coder = CrossCoder(config)
    sample = 3.0 * torch.randn(512, 2, 8)
    initialize(coder, sample, torch.Generator().manual_seed(0), b_dec_init="mean")
    torch.testing.assert_close(coder.W_enc, coder.W_dec.transpose(1, 2))
    torch.testing.assert_close(coder.decoder_norms(), torch.full((2, 16), 0.005))
    torch.testing.assert_close(coder.W_dec[0], coder.W_dec[1])  # same init for every source
    scaled = sample * coder.input_scale[:, None]
    assert scaled.norm(dim=-1).mean(0).tolist() == pytest.approx([math.sqrt(8)] * 2, rel=1e-5)
    torch.testing.assert_close(coder.b_dec, scaled.mean(0))
    # the encoder starts centred on b_dec: pre = sum_m (x_m - b_dec^m) W_enc^m
    centred = torch.einsum("bsd,sdf->bf", scaled - coder.b_dec, coder.W_enc)
    torch.testing.assert_close(coder.pre_activations(scaled), centred, rtol=1e-4, atol=1e-5)


def test_geometric_median_of_collinear_points_is_the_middle_one():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    torch.testing.assert_close(
        geometric_median(points), torch.tensor([1.0, 0.0]), atol=1e-2, rtol=0
    )
    # robust to an outlier, unlike the mean
    square = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [100.0, 100.0]])
    assert geometric_median(square).norm() < 1.0


def test_learning_rate_warmup_constant_and_linear_decay():
    config = TrainingConfig(n_steps=100, lr=1.0, warmup_steps=10, decay_start=0.8)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(50, config) == pytest.approx(1.0)
    assert learning_rate(90, config) == pytest.approx(0.5)  # (100 - 90) / (100 - 80)


def test_forward_is_raw_units_in_and_out():
    coder = make_coder("relu_l1")
    x = torch.randn(4, 2, 8)
    expected = coder.decode_scaled(coder.encode(x)) / coder.input_scale[:, None]
    torch.testing.assert_close(coder(x), expected)


def test_configs_round_trip_json_and_save_load(tmp_path):
    config = CrossCoderConfig(
        2, 8, 16, k=3, sources=[Source("base-model", 3, "base"), Source("chat-model", 3, "chat")]
    )
    assert CrossCoderConfig.from_dict(config.to_dict()) == config
    training = TrainingConfig(n_steps=7, adam_betas=(0.8, 0.9))
    assert TrainingConfig.from_dict(training.to_dict()) == training
    coder = make_coder()
    coder.get_buffer("threshold").fill_(0.25)
    loaded = load_crosscoder(save_crosscoder(coder, tmp_path / "dict"))
    assert loaded.config == coder.config
    for name, tensor in coder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=17), "k = 17 is not in 1..dict_size = 16"),
        (dict(activation="gelu"), "unknown activation 'gelu'"),
        (dict(sources=[Source("m", 1)]), "1 sources given for n_sources = 2"),
    ],
)
def test_bad_configs_give_clear_errors(kwargs, message):
    with pytest.raises(InterpError, match=message):
        CrossCoderConfig(**dict(dict(n_sources=2, d_model=8, dict_size=16, k=3), **kwargs))


def test_input_with_wrong_d_model_is_a_clear_error():
    coder = make_coder()
    with pytest.raises(InterpError, match=r"d_model=8"):
        coder(torch.randn(3, 2, 9))


@pytest.mark.parametrize("activation", ["batchtopk", "topk"])
def test_sparse_training_path_equals_the_dense_formulas(activation):
    """Loss terms and every gradient of the sparse kernels equal the dense reference, AuxK
    included (some latents marked dead)."""
    results = []
    for sparse in (False, True):
        coder = make_coder(activation, S=2, d=8, F=32, k=3).train()
        with torch.no_grad():
            coder.b_enc.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
        x = torch.randn(12, 2, 8, generator=torch.Generator().manual_seed(3))
        dead = torch.arange(32) % 3 == 0
        out = coder.loss(x, dead, sparse=sparse)
        out.total.backward()
        grads = {name: p.grad.clone() for name, p in coder.named_parameters()}
        results.append((out, grads))
    (dense, dense_grads), (sparse_out, sparse_grads) = results
    assert set(dense.terms) == set(sparse_out.terms) == {"reconstruction", "auxk"}
    for name in dense.terms:
        torch.testing.assert_close(sparse_out.terms[name], dense.terms[name])
    torch.testing.assert_close(sparse_out.x_hat, dense.x_hat)
    assert torch.equal(sparse_out.fired, dense.fired)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, msg=name)
