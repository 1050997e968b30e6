"""SAE conventions (Gao et al. / Bussmann et al.: encoder centred on b_dec, unit-norm decoder) and
BatchTopK's end-of-training threshold calibration, against hand computations and against
dictionary_learning's BatchTopKTrainer."""

import json
from itertools import islice

import pytest
import torch

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.crosscoder import CrossCoder
from crosscoders.init import initialize
from crosscoders.streams import tensor_stream
from crosscoders.synthetic import PlantedDictionary
from crosscoders.trainer import Trainer
from interp.errors import InterpError


def sae(**overrides) -> CrossCoder:
    config = CrossCoderConfig(**dict(dict(n_sources=1, d_model=8, dict_size=32, k=3), **overrides))
    coder = CrossCoder(config)
    sample = torch.randn(256, 1, 8, generator=torch.Generator().manual_seed(0)) + 4.0
    initialize(coder, sample, torch.Generator().manual_seed(1))
    return coder.train()


def test_an_sae_defaults_to_the_sae_conventions_and_a_crosscoder_to_minder_form():
    batchtopk_sae = CrossCoderConfig(n_sources=1, d_model=4, dict_size=8, k=2)
    assert batchtopk_sae.apply_b_dec_to_input and batchtopk_sae.unit_norm_decoder
    l1_sae = CrossCoderConfig(n_sources=1, d_model=4, dict_size=8, activation="relu_l1")
    assert l1_sae.apply_b_dec_to_input and not l1_sae.unit_norm_decoder  # L1 is weighted by ||d||
    crosscoder = CrossCoderConfig(n_sources=2, d_model=4, dict_size=8, k=2)
    assert not crosscoder.apply_b_dec_to_input and not crosscoder.unit_norm_decoder
    # a saved config keeps the resolved values (a config.json without them resolves the same way)
    assert CrossCoderConfig.from_dict(json.loads(json.dumps(batchtopk_sae.to_dict()))) == (
        batchtopk_sae
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_sources=2, apply_b_dec_to_input=True), "apply_b_dec_to_input = true needs n_sour"),
        (dict(n_sources=2, unit_norm_decoder=True), "unit_norm_decoder = true needs n_sources = 1"),
        (dict(n_sources=1, decoder_init_norm=0.5), "decoder_init_norm = 0.5 with unit_norm"),
    ],
)
def test_sae_conventions_on_a_crosscoder_or_a_scaled_decoder_are_clear_errors(kwargs, message):
    with pytest.raises(InterpError, match=message):
        CrossCoderConfig(d_model=4, dict_size=8, k=2, **kwargs)


def test_centred_encoder_reads_x_minus_b_dec_and_trains_b_dec_through_the_encoder():
    coder = sae()
    with torch.no_grad():
        coder.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    x = torch.randn(5, 1, 8, generator=torch.Generator().manual_seed(3))
    W_enc, b_enc, b_dec = coder.W_enc[0], coder.b_enc, coder.b_dec[0]
    by_hand = (x[:, 0] - b_dec) @ W_enc + b_enc  # f = ReLU((x - b_dec) W_enc + b_enc)
    pre = coder.pre_activations(x)
    torch.testing.assert_close(pre, by_hand)
    # d(sum pre)/d b_dec = -sum_n sum_j W_enc[:, j] (the encoder's share of b_dec's gradient)
    pre.sum().backward()
    torch.testing.assert_close(coder.b_dec.grad[0], -5 * W_enc.detach().sum(dim=1))
    # at init the centred model is the same map as Minder et al.'s form with b_enc folded
    fresh, folded = sae(), sae(apply_b_dec_to_input=False)
    torch.testing.assert_close(fresh.pre_activations(x), folded.pre_activations(x))


@pytest.mark.parametrize("activation", ["batchtopk", "topk"])
def test_sparse_training_path_equals_the_dense_formulas_for_a_centred_sae(activation):
    results = []
    for sparse in (False, True):
        coder = sae(activation=activation)
        with torch.no_grad():
            coder.b_enc.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
        x = torch.randn(12, 1, 8, generator=torch.Generator().manual_seed(3)) + 4.0
        out = coder.loss(x, torch.arange(32) % 3 == 0, sparse=sparse)
        out.total.backward()
        results.append((out, {name: p.grad.clone() for name, p in coder.named_parameters()}))
    (dense, dense_grads), (sparse_out, sparse_grads) = results
    assert set(dense.terms) == {"reconstruction", "auxk"}
    for name in dense.terms:
        torch.testing.assert_close(sparse_out.terms[name], dense.terms[name])
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, msg=name)
    assert dense_grads["b_dec"].abs().sum() > 0


def test_unit_norm_decoder_drops_the_gradient_along_each_row_and_renormalises():
    coder = CrossCoder(CrossCoderConfig(n_sources=1, d_model=2, dict_size=2, k=1))
    with torch.no_grad():
        coder.W_dec.copy_(torch.tensor([[[2.0, 0.0], [0.0, 0.5]]]))  # rows d_0, d_1
    coder.W_dec.grad = torch.tensor([[[3.0, 4.0], [-1.0, 7.0]]])
    coder.remove_decoder_gradient_along_decoder()
    # u_0 = (1, 0): (3, 4) -> (0, 4); u_1 = (0, 1): (-1, 7) -> (-1, 0)
    assert torch.equal(coder.W_dec.grad, torch.tensor([[[0.0, 4.0], [-1.0, 0.0]]]))
    coder.normalize_decoder()
    assert torch.equal(coder.W_dec.detach(), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))


def test_one_sae_step_equals_dictionary_learning_batch_top_k_trainer(tmp_path):
    """Same weights, same batch, same hyper-parameters: one update of our trainer and of
    dictionary_learning 0.1.0's BatchTopKTrainer give the same weights."""
    batch_top_k = pytest.importorskip("dictionary_learning.trainers.batch_top_k")
    d, F, k, batch = 16, 64, 4, 128
    data = torch.randn(batch, 1, d, generator=torch.Generator().manual_seed(0)) + 2.0
    ours = Trainer(
        CrossCoderConfig(n_sources=1, d_model=d, dict_size=F, k=k, threshold_start_step=10),
        TrainingConfig(n_steps=5, batch_size=batch, lr=1e-2, warmup_steps=0, decay_start=1.0,
                       normalize_inputs=False, init_sample_tokens=batch, log_every=10,
                       checkpoint_every=10),
        tensor_stream(data, batch), tmp_path, progress=False,
    )  # fmt: skip
    theirs = batch_top_k.BatchTopKTrainer(
        steps=5, activation_dim=d, dict_size=F, k=k, layer=0, lm_name="test", lr=1e-2,
        warmup_steps=0, threshold_start_step=10, seed=0, device="cpu",
    )  # fmt: skip
    coder = ours.coder
    with torch.no_grad():  # theirs: x_hat = W_dec^T-layout Linear; encoder(x - b_dec)
        theirs.ae.encoder.weight.copy_(coder.W_enc[0].T)
        theirs.ae.encoder.bias.copy_(coder.b_enc)
        theirs.ae.decoder.weight.copy_(coder.W_dec[0].T)
        theirs.ae.b_dec.copy_(coder.b_dec[0])
    ours.train_step(data)
    theirs.update(1, data[:, 0])  # step 1: no geometric-median re-initialisation of b_dec
    ae = theirs.ae
    torch.testing.assert_close(coder.W_enc[0].detach(), ae.encoder.weight.T, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(coder.b_enc.detach(), ae.encoder.bias, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(coder.W_dec[0].detach(), ae.decoder.weight.T, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(coder.b_dec[0].detach(), ae.b_dec, atol=1e-6, rtol=1e-5)


def test_threshold_is_the_mean_final_cutoff_of_the_last_batches(tmp_path):
    truth = PlantedDictionary.random(16, n_shared=12, n_base_only=0, n_chat_only=0, seed=0)
    stream = truth.stream(128, seed=0)
    n_steps, calibration = 30, 4
    coder = Trainer(
        CrossCoderConfig(n_sources=2, d_model=16, dict_size=48, k=3, threshold_start_step=10),
        TrainingConfig(n_steps=n_steps, batch_size=128, lr=1e-2, warmup_steps=5,
                       threshold_calibration_batches=calibration, init_sample_tokens=256,
                       log_every=10, checkpoint_every=100),
        stream, tmp_path, progress=False,
    ).train()  # fmt: skip
    ema = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])["threshold"]
    cutoffs = []
    with torch.no_grad():
        s = coder.decoder_norms().sum(dim=0)
        for batch in islice(stream(n_steps - calibration), calibration):
            g = torch.relu(coder.pre_activations(coder.scale(batch))) * s  # g = f_j s_j
            cutoffs.append(g.flatten().topk(3 * 128).values.min())  # the k*B-th largest
    theta = coder.get_buffer("threshold")
    torch.testing.assert_close(theta, torch.stack(cutoffs).mean())
    assert theta.item() != pytest.approx(ema)  # the EMA's value was replaced


def test_a_run_folder_from_before_new_config_fields_is_resumed_not_refused(tmp_path):
    truth = PlantedDictionary.random(16, n_shared=12, n_base_only=0, n_chat_only=0, seed=0)
    configs = (
        CrossCoderConfig(n_sources=2, d_model=16, dict_size=48, k=3),
        TrainingConfig(n_steps=2, batch_size=64, warmup_steps=1, init_sample_tokens=64),
    )
    Trainer(*configs, truth.stream(64), tmp_path, progress=False).train()
    saved = json.loads((tmp_path / "training.json").read_text())
    for section, field in (
        ("crosscoder", "apply_b_dec_to_input"),
        ("crosscoder", "unit_norm_decoder"),
        ("training", "threshold_calibration_batches"),
    ):
        del saved[section][field]
    (tmp_path / "training.json").write_text(json.dumps(saved))
    assert Trainer(*configs, truth.stream(64), tmp_path, progress=False).step == 2
