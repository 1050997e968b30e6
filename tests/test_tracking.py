"""`--log-to`: the trainer's log records also reach Weights & Biases (offline: no network) or
TensorBoard; a missing package or an unknown tracker is a clear error."""

import importlib.util
import json
import time

import pytest
import torch

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.streams import tensor_stream
from crosscoders.tracking import make_tracker
from crosscoders.trainer import Trainer
from interp.errors import InterpError

D, F, BATCH = 8, 16, 32


def train(out, log_to):
    acts = torch.randn(BATCH * 8, 2, D, generator=torch.Generator().manual_seed(0))
    coder = CrossCoderConfig(2, D, F, activation="topk", k=4)
    training = TrainingConfig(n_steps=6, batch_size=BATCH, log_every=3, warmup_steps=1)
    Trainer(coder, training, tensor_stream(acts, BATCH), out, progress=False, log_to=log_to).train()
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_run_holds_the_logged_records(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    records = train(tmp_path / "run", "wandb")
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    # each logged record's history row is stored with its values as JSON text; wandb's service
    # process may still be writing the file when finish() returns, so wait for the last row
    expected = [json.dumps(r[key]).encode() for r in records for key in ("fve", "loss")]
    deadline = time.monotonic() + 60
    while not all(value in run_file.read_bytes() for value in expected):
        assert time.monotonic() < deadline, "the logged values never reached the wandb run file"
        time.sleep(0.5)
    assert [r["step"] for r in records] == [3, 6]


def test_unknown_or_missing_trackers_are_clear_errors(tmp_path):
    with pytest.raises(InterpError, match="expected one of wandb, tensorboard"):
        make_tracker("mlflow", tmp_path, {})
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(InterpError, match="pip install tensorboard"):
            make_tracker("tensorboard", tmp_path, {})
    else:
        tracker = make_tracker("tensorboard", tmp_path, {})
        tracker.log({"step": 1, "loss": 0.5})
        tracker.close()
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
