"""The trainer on planted ground truth: recovery, classes by relative decoder norm, BatchTopK
sparsity in training and at inference, exact resume, clear errors."""

import json
import os
import signal
import subprocess
import sys
from itertools import islice
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
import torch
from safetensors.torch import load_file
from torch.nn.functional import normalize

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.decoder_norms import coder_relative_decoder_norm, latent_classes
from crosscoders.evaluate import reconstruction_metrics
from crosscoders.io import CONFIG_FILE, WEIGHTS_FILE, load_crosscoder
from crosscoders.synthetic import PlantedDictionary
from crosscoders.trainer import KILL_AT_ENV, KILL_POINTS, Trainer, training_precision
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
    assert not (tmp_path / WEIGHTS_FILE).exists()  # the old run's dictionary is gone with it


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
    # float32 on both devices: this compares kernels (precision auto would be bf16 on CUDA)
    coder_config, training = configs(10, checkpoint_every=5, log_every=5, precision="float32")
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


# --- faults: kills in the end-of-training window, torn logs, non-finite losses, two writers ---

KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_trainer import train_for_kill_test
train_for_kill_test({out!r})
"""


def train_for_kill_test(out: str) -> None:
    """The run the kill tests interrupt (in a subprocess): 30 steps, checkpoints every 10, theta
    learned from step 5 and calibrated over the last 4 batches."""
    coder_config, training = configs(
        30, checkpoint_every=10, log_every=5, threshold_calibration_batches=4
    )
    coder_config.threshold_start_step = 5
    Trainer(coder_config, training, planted().stream(BATCH), Path(out), progress=False).train()


def run_training(out: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_AT_ENV, None)
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    finished = run_training(out)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return out


def logged_losses(out: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(record["step"], record["loss"]) for record in records]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_in_the_end_of_training_window_then_a_rerun_writes_the_same_dictionary(
    tmp_path, uninterrupted_run, point
):
    out = tmp_path / "run"
    killed = run_training(out, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / WEIGHTS_FILE).exists()
    rerun = run_training(out)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert (out / name).read_bytes() == (uninterrupted_run / name).read_bytes(), name
    assert logged_losses(out) == logged_losses(uninterrupted_run)
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 30
    assert not list((out / "checkpoints").glob(".*"))  # no temp folder left behind


def test_a_torn_last_log_line_is_dropped_on_resume(tmp_path):
    truth = planted()
    coder_config, training = configs(30, checkpoint_every=10, log_every=5)
    Trainer(coder_config, training, truth.stream(BATCH), tmp_path / "a", progress=False).train()
    with pytest.raises(InterpError, match="stream ended after 25 batches"):
        Trainer(
            coder_config,
            training,
            stopping_stream(truth.stream(BATCH), 25),
            tmp_path / "b",
            progress=False,
        ).train()
    with (tmp_path / "b" / "log.jsonl").open("a") as handle:
        handle.write('{"step": 30, "tokens": 76')  # a crash (or a full disk) mid-line
    Trainer(coder_config, training, truth.stream(BATCH), tmp_path / "b", progress=False).train()
    assert logged_losses(tmp_path / "b") == logged_losses(tmp_path / "a")


def test_a_run_killed_before_its_first_checkpoint_starts_a_clean_log(tmp_path):
    truth = planted()
    coder_config, training = configs(20, checkpoint_every=10, log_every=5)
    Trainer(coder_config, training, truth.stream(BATCH), tmp_path / "a", progress=False).train()
    with pytest.raises(InterpError, match="stream ended after 7 batches"):
        Trainer(
            coder_config,
            training,
            stopping_stream(truth.stream(BATCH), 7),
            tmp_path / "b",
            progress=False,
        ).train()
    Trainer(coder_config, training, truth.stream(BATCH), tmp_path / "b", progress=False).train()
    assert logged_losses(tmp_path / "b") == logged_losses(tmp_path / "a")  # step 5 once


def test_a_damaged_log_line_before_the_last_is_a_clear_error(tmp_path):
    coder_config, training = configs(20, checkpoint_every=10, log_every=5)
    with pytest.raises(InterpError, match="stream ended after 15 batches"):
        Trainer(
            coder_config,
            training,
            stopping_stream(planted().stream(BATCH), 15),
            tmp_path,
            progress=False,
        ).train()
    log = tmp_path / "log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(["{not json", *lines[1:]]) + "\n")
    with pytest.raises(InterpError, match="line 1 is not a log record"):
        Trainer(coder_config, training, planted().stream(BATCH), tmp_path, progress=False)


def poisoned_stream(stream, bad_batch: int, value: float):
    """`stream` with one activation of batch number `bad_batch` set to `value`."""

    def batches(start: int):
        for number, batch in enumerate(stream(start), start=start):
            if number == bad_batch:
                batch = batch.clone()
                batch[3, 1, 5] = value
            yield batch

    return batches


@pytest.mark.parametrize(
    "value,cause",
    [
        (float("nan"), "the batch holds NaN or inf activations: check the data"),
        (1e30, "the batch is finite, so the training diverged: lower --lr"),  # x^2 overflows
    ],
)
def test_a_non_finite_loss_stops_training_with_one_line_and_writes_nothing(tmp_path, value, cause):
    coder_config, training = configs(20, checkpoint_every=5, log_every=5)
    stream = poisoned_stream(planted().stream(BATCH), 12, value)  # after the init sample
    trainer = Trainer(coder_config, training, stream, tmp_path, progress=False)
    with pytest.raises(InterpError) as stopped:
        trainer.train()
    message = str(stopped.value)
    assert "\n" not in message
    assert "at step 13 of 20 (batch number 12 of the stream)" in message
    assert cause in message and "keeps the checkpoint of step 10" in message
    assert not (tmp_path / WEIGHTS_FILE).exists()
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 10
    state = load_file(tmp_path / "checkpoints" / "step-00000010" / "state.safetensors")
    assert all(t.isfinite().all() for t in state.values() if t.is_floating_point())
    assert [step for step, _ in logged_losses(tmp_path)] == [5, 10]


def test_a_second_writer_of_a_dictionary_folder_is_refused_at_once(tmp_path):
    first = Trainer(*configs(2), planted().stream(BATCH), tmp_path, progress=False)
    with pytest.raises(InterpError, match="another process is writing the dictionary folder"):
        Trainer(*configs(2), planted().stream(BATCH), tmp_path, progress=False)
    first.train()  # the lock goes with the end of training
    assert Trainer(*configs(2), planted().stream(BATCH), tmp_path, progress=False).step == 2


def test_bf16_training_reaches_the_float32_fve_on_planted_atoms(tmp_path):
    """precision = bf16 (autocast: bf16 matmuls in the forward, float32 master weights and Adam
    state) on the CPU: after the same steps its held-out FVE is within 0.01 of float32's."""
    fve, weights = {}, {}
    for precision in ("float32", "bf16"):
        trainer = Trainer(
            *configs(300, precision=precision),
            planted().stream(BATCH),
            tmp_path / precision,
            progress=False,
        )
        coder = trainer.train()
        assert {p.dtype for p in coder.parameters()} == {torch.float32}
        moments = [v for state in trainer.optimizer.state.values() for v in state.values()]
        assert {v.dtype for v in moments if v.is_floating_point()} == {torch.float32}
        metrics = reconstruction_metrics(coder, islice(planted().stream(512, seed=99)(0), 8))
        fve[precision], weights[precision] = min(metrics["fve"].values()), coder.W_dec.detach()
    assert fve["float32"] > 0.9, fve
    assert abs(fve["bf16"] - fve["float32"]) <= 0.01, fve
    assert not torch.equal(weights["bf16"], weights["float32"])  # bf16 arithmetic really ran


def test_precision_auto_is_bf16_on_cuda_and_float32_on_the_cpu():
    assert training_precision("auto", torch.device("cuda:0")) == "bf16"
    assert training_precision("auto", torch.device("cpu")) == "float32"
    assert training_precision("tf32", torch.device("cpu")) == "float32"
    assert training_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(
        InterpError, match="precision = 'fp8': expected auto, float32, tf32 or bf16"
    ):
        TrainingConfig(n_steps=1, precision="fp8")


def test_dense_and_sparse_kernels_train_the_same_dictionary():
    """`sparse_kernels` changes the cost, not the math: 20 steps give the same weights to float
    tolerance."""
    weights = {}
    for sparse in (False, True):
        with TemporaryDirectory() as out:
            trainer = Trainer(
                *configs(20, sparse_kernels=sparse), planted().stream(BATCH), Path(out),
                progress=False,
            )  # fmt: skip
            weights[sparse] = {n: p.detach().clone() for n, p in trainer.train().named_parameters()}
    for name, value in weights[True].items():
        torch.testing.assert_close(value, weights[False][name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_and_tf32_training_on_cuda_reach_the_float32_fve(tmp_path):
    """precision auto is bf16 on CUDA (TF32 for the float32 matmuls left): after the same steps
    its held-out FVE, and tf32's, are within 0.01 of float32's on the same device."""
    fve = {}
    for precision in ("float32", "tf32", "auto"):
        coder = Trainer(
            *configs(300, precision=precision), planted().stream(BATCH), tmp_path / precision,
            device="cuda", progress=False,
        ).train()  # fmt: skip
        heldout = [x.cuda() for x in islice(planted().stream(512, seed=99)(0), 8)]
        fve[precision] = min(reconstruction_metrics(coder, heldout)["fve"].values())
    assert fve["float32"] > 0.9, fve
    assert abs(fve["auto"] - fve["float32"]) <= 0.01 and abs(fve["tf32"] - fve["float32"]) <= 0.01
