"""The README's Python API example runs end to end (on tiny random models)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny_models import save_tiny_gemma_pair_with_real_tokenizer

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "api_example.py"


@pytest.mark.slow
def test_api_example_runs_on_tiny_models(tmp_path):
    base, chat = save_tiny_gemma_pair_with_real_tokenizer(tmp_path)
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "run"), base, chat],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TuCo of the prompt: 0." in result.stdout
    assert "CE recovered by splicing, chat: " in result.stdout
    assert "steered: " in result.stdout
    assert "latent_class" in result.stdout  # top_latents joined with the analysis
    latents = pd.read_parquet(tmp_path / "run" / "analysis" / "btk" / "latents.parquet")
    assert len(latents) == 256
