"""The trainer on planted ground truth: recovery, classes by relative decoder norm, BatchTopK
sparsity in training and at inference, exact resume, clear errors."""

import json
from itertools import islice

import pytest
import torch
from torch.nn.functional import normalize

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.decoder_norms import coder_relative_decoder_norm, latent_classes
from crosscoders.evaluate import reconstruction_metrics
from crosscoders.io import load_crosscoder
from crosscoders.synthetic import PlantedDictionary
from crosscoders.trainer import Trainer
from interp.errors import InterpError

D, F, K, BATCH = 32, 96, 3, 256


def planted() -> PlantedDictionary:
    return PlantedDictionary.random(
        D, n_shared=24, n_base_only=8, n_chat_only=8, firing_probability=0.06, seed=0
    )


def configs(n_steps: int, **training) -> tuple[CrossCoderConfig, TrainingConfig]:
    coder = CrossCoderConfig(
        n_sources=2, d_model=D, dict_size=F, k=K, auxk_k=16, threshold_start_step=n_steps // 2
    )
    defaults = dict(
        n_steps=n_steps,
        batch_size=BATCH,
        lr=1e-2,
        warmup_steps=20,
        dead_after_tokens=BATCH * 20,
        log_every=50,
        checkpoint_every=10**6,
        init_sample_tokens=2048,
    )
    return coder, TrainingConfig(**dict(defaults, **training))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    truth = planted()
    out = tmp_path_factory.mktemp("planted")
    coder = Trainer(*configs(600), truth.stream(BATCH, seed=0), out, progress=False).train()
    return truth, coder, out


def test_batchtopk_crosscoder_recovers_planted_atoms_and_their_classes(trained):
    truth, coder, _ = trained
    atoms = normalize(torch.cat([truth.atoms[:, 0], truth.atoms[:, 1]], dim=-1), dim=-1)
    decoders = normalize(torch.cat([coder.W_dec[0], coder.W_dec[1]], dim=-1).detach(), dim=-1)
    best_cosine, best_latent = (atoms @ decoders.T).max(dim=1)  # per atom: closest latent
    recovered = best_cosine >= 0.9
    assert recovered.float().mean() >= 0.9, best_cosine
    classes = latent_classes(coder_relative_decoder_norm(coder)[best_latent])
    for atom, (label, truth_label) in enumerate(zip(classes, truth.classes, strict=True)):
        if recovered[atom]:
            assert label == truth_label, (atom, label, truth_label)


def test_inference_threshold_gives_l0_within_ten_percent_of_k_on_heldout_data(trained):
    truth, coder, _ = trained
    heldout = islice(truth.stream(512, seed=99)(0), 8)
    metrics = reconstruction_metrics(coder, heldout)
    assert abs(metrics["l0"] - K) <= 0.1 * K, metrics
    assert min(metrics["fve"].values()) > 0.9


def test_training_log_has_every_loss_term_and_metric(trained):
    _, _, out = trained
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(50, 601, 50))
    last = records[-1]
    for key in (
        "loss",
        "loss_reconstruction",
        "loss_auxk",
        "fve",
        "fve_0",
        "fve_1",
        "l0",
        "dead_fraction",
        "threshold",
        "lr",
        "tokens_per_s",
    ):
        assert key in last, key
    assert last["l0"] == K  # BatchTopK: exactly k * B nonzeros per training batch
    assert load_crosscoder(out).config == trained[1].config


def stopping_stream(stream, stop_after: int):
    """A stream that dies after `stop_after` batches, like a killed job."""

    def batches(start: int):
        yield from islice(stream(start), max(stop_after - start, 0))

    return batches


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    truth = planted()
    coder_config, training = configs(
        40, checkpoint_every=10, log_every=5, dead_after_tokens=BATCH * 4
    )
    coder_config.threshold_start_step = 5
    whole = Trainer(coder_config, training, truth.stream(BATCH), tmp_path / "a", progress=False)
    whole = whole.train()
    with pytest.raises(InterpError, match="stream ended after 25 batches"):
        Trainer(
            coder_config,
            training,
            stopping_stream(truth.stream(BATCH), 25),
            tmp_path / "b",
            progress=False,
        ).train()
    resumed = Trainer(coder_config, training, truth.stream(BATCH), tmp_path / "b", progress=False)
    assert resumed.step == 20
    resumed = resumed.train()
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    logs = [(tmp_path / run / "log.jsonl").read_text() for run in ("a", "b")]
    assert [json.loads(x)["step"] for x in logs[1].splitlines()] == list(range(5, 41, 5))
    assert [json.loads(x)["loss"] for x in logs[0].splitlines()] == [
        json.loads(x)["loss"] for x in logs[1].splitlines()
    ]


def test_data_with_another_d_model_is_a_clear_error(tmp_path):
    wrong = PlantedDictionary.random(D + 1, 4, 2, 2)
    with pytest.raises(InterpError, match=rf"shape \(2048, 2, {D + 1}\).*d_model={D}"):
        Trainer(*configs(10), wrong.stream(BATCH), tmp_path, progress=False)


def test_reusing_a_folder_with_another_config_is_refused(tmp_path):
    Trainer(*configs(2), planted().stream(BATCH), tmp_path, progress=False).train()
    with pytest.raises(InterpError, match="different config"):
        Trainer(*configs(3), planted().stream(BATCH), tmp_path, progress=False)
    trainer = Trainer(
        *configs(3), planted().stream(BATCH), tmp_path, progress=False, overwrite=True
    )
    assert trainer.step == 0


def test_jumprelu_is_not_trainable(tmp_path):
    coder_config, training = configs(2)
    coder_config.activation = "jumprelu"
    with pytest.raises(InterpError, match="cannot be trained"):
        Trainer(coder_config, training, planted().stream(BATCH), tmp_path, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_starts_from_the_cpu_init_and_matches_cpu_training(tmp_path):
    """The initial weights are drawn on the CPU whatever the device; a few steps on CUDA then
    track the CPU run (float tolerance: the kernels differ), and a CUDA run resumes."""
    truth = planted()
    coder_config, training = configs(10, checkpoint_every=5, log_every=5)
    on_cpu = Trainer(coder_config, training, truth.stream(BATCH), tmp_path / "cpu", progress=False)
    on_cuda = Trainer(
        coder_config, training, truth.stream(BATCH), tmp_path / "cuda", device="cuda",
        progress=False,
    )  # fmt: skip
    for name, tensor in on_cpu.coder.state_dict().items():
        assert torch.equal(on_cuda.coder.state_dict()[name].cpu(), tensor), name
    cpu_coder, cuda_coder = on_cpu.train(), on_cuda.train()
    assert cuda_coder.W_dec.device.type == "cuda"
    for name, tensor in cpu_coder.state_dict().items():
        torch.testing.assert_close(
            cuda_coder.state_dict()[name].cpu(), tensor, rtol=1e-3, atol=1e-3
        )
    resumed = Trainer(
        coder_config, training, truth.stream(BATCH), tmp_path / "cuda", device="cuda",
        progress=False,
    )  # fmt: skip
    assert resumed.step == 10
