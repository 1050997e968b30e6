"""`interp steer train | generate` on tiny models saved as folders; the evaluation run folder."""

import json

import pandas as pd
import pytest
import torch
from test_steering_training import word_texts
from tiny_models import loaded_dtypes, save_tiny, tiny_pair
from typer.testing import CliRunner

from interp.cli.main import app
from steering.evaluate import EvalConfig, perplexity, run_evaluation
from steering.steering_map import load_map


@pytest.fixture(scope="module")
def pair_folders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    pair = tiny_pair("gemma3")
    return str(save_tiny(pair.base, folder / "base")), str(save_tiny(pair.chat, folder / "chat"))


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_train_then_generate_with_the_map(tmp_path, pair_folders):
    base, chat = pair_folders
    (tmp_path / "source.txt").write_text("\n".join(word_texts(0, 29, 8, seed=0)))
    (tmp_path / "target.json").write_text(json.dumps(word_texts(50, 79, 8, seed=1)))
    out = tmp_path / "map"
    common = ["--source", str(tmp_path / "source.txt"), "--target", str(tmp_path / "target.json")]
    common += ["--base", base, "--chat", chat, "--n", "8", "--out", str(out)]
    summary = json.loads(
        invoke("steer", "train", "--method", "lineas", "--steps", "5", "--lr", "0.05", *common)
    )
    assert summary["sites"] == 8 and summary["active_sites"] == 8
    assert load_map(out).info["source"].endswith("source.txt")
    assert len(json.loads((out / "training.json").read_text())["steps"]) == 5
    lines = invoke(
        "steer",
        "generate",
        str(out),
        "--prompt",
        "w1 w2 w3",
        "--base",
        base,
        "--chat",
        chat,
        "--max-new-tokens",
        "4",
    ).splitlines()
    assert set(json.loads(lines[-1])) == {"prompt", "plain", "steered"}
    # a second run into the same folder with another config is refused, without traceback
    result = CliRunner().invoke(app, ["steer", "train", "--method", "mean-diff", *common])
    assert result.exit_code != 0 and "different config" in str(result.exception)


@pytest.mark.parametrize(
    "model_dtype,expected", [("auto", torch.float32), ("bf16", torch.bfloat16)]
)
def test_steer_train_and_generate_load_the_models_in_model_dtype(
    tmp_path, pair_folders, monkeypatch, model_dtype, expected
):
    """--model-dtype reaches the weights: auto is float32 on the CPU, bf16 bfloat16 (the TuCo map
    records the dtype of the models it was made with; generate loads its companion in it)."""
    base, chat = pair_folders
    dtypes = loaded_dtypes(monkeypatch)
    out = tmp_path / "map"
    common = ["--base", base, "--chat", chat, "--model-dtype", model_dtype]
    invoke("steer", "train", "--method", "tuco", "--out", str(out), *common)
    recorded = load_map(out).config()
    assert recorded["steered"]["dtype"] == recorded["companion"]["dtype"] == str(expected)
    settings = json.loads((out / "config.json").read_text())
    assert settings["model_dtype"] == {"auto": "fp32", "bf16": "bf16"}[model_dtype]
    lines = invoke(
        "steer", "generate", str(out), "--prompt", "w1 w2 w3", "--max-new-tokens", "3", *common
    ).splitlines()
    assert set(json.loads(lines[-1])) == {"prompt", "plain", "steered"}
    # train: base and chat; generate: chat, then the map's companion (base) in the chat's dtype
    assert dtypes == [expected] * 4


def test_evaluation_writes_the_run_folder(tmp_path):
    pair = tiny_pair("gemma3")
    recipes = {"harmful": (0, 29), "chat-benign": (50, 79), "wiki": (30, 49)}

    def load_texts(recipe: str, split: str) -> list[str]:
        first, last = recipes[recipe]
        return word_texts(first, last, 24, seed=0 if split == "train" else 1)

    config = EvalConfig(
        n=8,
        n_eval=4,
        n_perplexity=3,
        max_new_tokens=3,
        strengths={"lineas": [0.0, 1.0], "mean-diff": [0.0, 2.0], "linear-act": [0.0, 1.0]},
        lineas={"steps": 3, "lr": 0.05},
    )
    table = run_evaluation(
        pair,
        config,
        tmp_path,
        load_texts,
        judge=lambda response: "w5" in response,
        progress=lambda _: None,
    )
    assert len(table) == 2 * 3 * 2
    assert table.equals(pd.read_parquet(tmp_path / "results.parquet"))
    for name in ("config.json", "results.json", "examples.json", "training.json", "plot.png"):
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_dtype"] == "fp32"
    markdown = (tmp_path / "results.md").read_text().splitlines()
    assert markdown[0] == "| " + " | ".join(table.columns) + " |"
    assert len(markdown) == 2 + len(table)
    assert (tmp_path / "maps" / "induce-refusal" / "linear-act" / "map.json").is_file()
    # strength 0 is evaluated once per task: it must be the unsteered model's numbers
    unsteered = table[(table.strength == 0) & (table.task == "remove-refusal")]
    wiki = load_texts("wiki", "heldout")[: config.n_perplexity]
    assert unsteered.perplexity.nunique() == 1
    assert unsteered.perplexity.iloc[0] == pytest.approx(perplexity(pair.chat, wiki), rel=1e-6)
    steered = table[table.strength > 0]
    assert (steered.perplexity != table[table.strength == 0].perplexity.iloc[0]).any()
