"""Data-parallel training (2 CPU ranks, gloo, launched with torchrun) equals single-process
training at the same global batch. Run as a script, this file is the torchrun worker."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from crosscoders import ddp
from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.io import load_crosscoder
from crosscoders.synthetic import PlantedDictionary
from crosscoders.trainer import Trainer


def run(out: Path) -> None:
    truth = PlantedDictionary.random(
        16, n_shared=8, n_base_only=4, n_chat_only=4, firing_probability=0.1, seed=3
    )
    coder = CrossCoderConfig(
        n_sources=2, d_model=16, dict_size=48, k=4, auxk_k=8, threshold_start_step=5
    )
    training = TrainingConfig(
        n_steps=30,
        batch_size=64,
        lr=5e-3,
        warmup_steps=5,
        dead_after_tokens=64 * 3,
        log_every=10,
        checkpoint_every=10,
        init_sample_tokens=256,
    )
    Trainer(coder, training, truth.stream(64, seed=1), out, progress=False).train()


def test_two_cpu_ranks_match_single_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        __file__,
        str(tmp_path / "ddp"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    run(tmp_path / "single")
    single, parallel = load_crosscoder(tmp_path / "single"), load_crosscoder(tmp_path / "ddp")
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(
            parallel.state_dict()[name], tensor, rtol=1e-4, atol=1e-5, msg=name
        )
    assert single.get_buffer("threshold") > 0  # theta was learned, identically on both sides


if __name__ == "__main__":
    ddp.init_from_env()
    try:
        run(Path(sys.argv[1]))
    finally:
        ddp.shutdown()
