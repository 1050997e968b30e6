"""The quick profile on the tiny pair gives the same outputs (same seeds) as the fixture recorded
before the options / pipeline restructuring (issue 17): the dictionaries' weights, their eval
metrics, the analysis's latent classes, TuCo's summary and the steering results.

The fixture tests/fixtures/quick_golden.json was written by this test at the code before the
restructuring: `INTERP_WRITE_GOLDEN=1 pytest tests/test_quick_golden.py` rewrites it (only do that
for a change that is meant to change the outputs, and say so in the commit). Rewritten twice, each
time for a retrained chat-tune, whose conversations.jsonl is the `chat` recipe of the profile's
mix and so changes the cache; each time, with the previous file, the merged code reproduced the
fixture exactly first (the second time: after the merge of streaming, the pipeline's library
calls and the async cache writer)."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file
from tiny_models import save_tiny_gemma_pair_with_real_tokenizer

from interp.pipeline import PROFILES_DIR, load_config, run_pipeline

FIXTURE = Path(__file__).parent / "fixtures" / "quick_golden.json"
RELATIVE_TOLERANCE = 1e-4  # same code, same seeds, same CPU: only summation order may differ


def _weights_summary(folder: Path) -> dict[str, float]:
    """Per tensor of the dictionary: its sum and its sum of absolute values."""
    tensors = load_file(folder / "weights.safetensors")
    summary = {}
    for name, tensor in sorted(tensors.items()):
        summary[f"{name}.sum"] = float(tensor.double().sum())
        summary[f"{name}.abs_sum"] = float(tensor.double().abs().sum())
    return summary


def _numbers(value: object, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON value, flattened to `a.b.c` keys (strings and lists of strings are
    dropped; a list of numbers keeps its index)."""
    if isinstance(value, bool):
        return {prefix: float(value)}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    numbers: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            numbers |= _numbers(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            numbers |= _numbers(item, f"{prefix}[{index}]")
    return numbers


def quick_outputs(run: Path, dictionaries: list[str]) -> dict[str, object]:
    """What the quick profile produced that a restructuring must not change."""
    outputs: dict[str, object] = {}
    for name in dictionaries:
        outputs[f"weights.{name}"] = _weights_summary(run / "dictionaries" / name)
        outputs[f"eval.{name}"] = _numbers(
            json.loads((run / "dictionaries" / name / "eval.json").read_text())
        )
        latents = pd.read_parquet(run / "analysis" / name / "latents.parquet")
        outputs[f"latent_classes.{name}"] = {
            str(key): int(count) for key, count in latents["latent_class"].value_counts().items()
        }
        outputs[f"rel_norm_sum.{name}"] = float(latents["rel_norm"].sum())
    outputs["tuco"] = _numbers(json.loads((run / "tuco" / "summary.json").read_text()))
    results = pd.read_parquet(run / "steering" / "results.parquet")
    outputs["steering"] = {
        f"{row.task}/{row.method}/{row.strength:g}": [
            float(row.concept_rate),
            float(row.perplexity),
        ]
        for row in results.itertuples()
    }
    return outputs


def _assert_close(actual: object, expected: object, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), (
            f"{where}: keys {sorted(actual) if isinstance(actual, dict) else actual} != "
            f"{sorted(expected)}"
        )
        for key in expected:
            _assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, f"{where}[{index}]")
    else:
        assert actual == pytest.approx(expected, rel=RELATIVE_TOLERANCE, abs=1e-6), (
            f"{where}: {actual} != {expected}"
        )


@pytest.mark.slow
def test_quick_profile_on_the_tiny_pair_matches_the_recorded_outputs(tmp_path):
    from interp.cli.pipeline_cmd import run_step as invoke

    base, chat = save_tiny_gemma_pair_with_real_tokenizer(tmp_path)
    config = load_config(PROFILES_DIR / "tiny.toml")
    config["run"].update(out=str(tmp_path / "run"), base=base, chat=chat)
    run_pipeline(config, invoke, echo=lambda _: None)
    outputs = quick_outputs(tmp_path / "run", sorted(config["train"]))
    if os.environ.get("INTERP_WRITE_GOLDEN") == "1":
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    expected = json.loads(FIXTURE.read_text())
    _assert_close(outputs, expected, "quick")
