import json

import pytest
from tiny_models import save_tiny, tiny_model, tiny_pair
from typer.testing import CliRunner

from interp.cli.main import app, run
from interp.errors import InterpError
from interp.tuco import roc_auc
from interp.tuco_experiments import PAPER_ALPHAS, ExperimentConfig, roc_points, run_experiments

TEXTS = {
    "benign": ["w1 w2", "w3 w4 w5", "w6"],
    "harmful": ["w10 w11 w12", "w13 w14", "w15 w16 w17 w18"],
    "jailbreak": ["w20 " * 30 + "w10 w11 w12", "w21 " * 12 + "w13 w14", "w22 " * 80 + "w15"],
}


def judge(text: str) -> bool:
    """A deterministic stand-in: a completion 'refuses' when it contains w7..w39."""
    return any(f"w{i}" in text.split() for i in range(7, 40))


def small_config(**overrides) -> ExperimentConfig:
    options = dict(
        base="tiny-base",
        chat="tiny-chat",
        n_prompts=3,
        batch_size=2,
        n_samples=4,
        max_new_tokens=5,
        alphas=[0.0, 1.0],
        max_prompt_tokens=60,
    )
    options.update(overrides)
    return ExperimentConfig(**options)


def test_roc_points_run_from_origin_to_one_one():
    fpr, tpr = roc_points([0.9, 0.1, 0.5], [1, 0, 0])
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert tpr[1] == 1.0 and fpr[1] == 0.0  # the top score is the positive


def test_experiments_write_consistent_results(tmp_path):
    pair = tiny_pair("gemma3")
    config = small_config()
    summary = run_experiments(pair, TEXTS, judge, config, tmp_path)
    for name in (
        "config.json",
        "scores.json",
        "jailbreak_success.json",
        "alpha_refusals.json",
        "summary.json",
        "tuco_by_set.png",
        "roc_plain_vs_jailbreak.png",
        "tuco_jailbreak_success.png",
        "refusal_vs_alpha.png",
        "cumulative_by_layer.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    scores = json.loads((tmp_path / "scores.json").read_text())
    # the 80-word jailbreak does not fit in 60 tokens: skipped
    assert summary["n_prompts"] == {"benign": 3, "harmful": 3, "jailbreak": 2}
    assert all(0 <= row["tuco"] <= 1 and len(row["cumulative"]) == 4 for row in scores)
    harmful = [r["tuco"] for r in scores if r["set"] == "harmful"]
    jailbreak = [r["tuco"] for r in scores if r["set"] == "jailbreak"]
    expected = roc_auc(harmful + jailbreak, [1] * 3 + [0] * 2)
    assert summary["auc_plain_vs_jailbreak"] == pytest.approx(expected)
    jailbreak_rows = json.loads((tmp_path / "jailbreak_success.json").read_text())
    assert [r["prompt"] for r in jailbreak_rows] == TEXTS["jailbreak"][:2]  # input order kept
    for row in jailbreak_rows:
        assert len(row["completions"]) == 4
        assert row["refusals"] == [judge(text) for text in row["completions"]]
        assert row["success"] == (row["non_refusals"] >= 2)
    by_alpha = json.loads((tmp_path / "alpha_refusals.json").read_text())
    for row in by_alpha:
        verdicts = [c["refusal"] for c in row["completions"]]
        assert row["refusal_rate"] == sum(verdicts) / 3
    assert summary["refusal_rate_by_alpha"] == {
        "0.0": by_alpha[0]["refusal_rate"],
        "1.0": by_alpha[1]["refusal_rate"],
    }


def test_alpha_grid_defaults_to_the_papers_and_names_other_values_extra(tmp_path):
    # Nuti et al. 2025: alpha in {0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25}
    assert ExperimentConfig(base="b", chat="c").alphas == [0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25]
    summary = run_experiments(tiny_pair("gemma3"), TEXTS, judge, small_config(), tmp_path)
    by_alpha = json.loads((tmp_path / "alpha_refusals.json").read_text())
    assert [(row["alpha"], row["extra"]) for row in by_alpha] == [(0.0, True), (1.0, False)]
    assert summary["extra_alphas"] == [0.0]
    assert summary["paper_alphas"] == list(PAPER_ALPHAS)
    assert summary["missing_paper_alphas"] == [0.75, 0.9, 0.95, 1.05, 1.1, 1.25]
    with pytest.raises(InterpError, match="repeat"):
        small_config(alphas=[1.0, 1.0])


def test_cli_experiments_default_alpha_grid_is_the_papers(tmp_path, monkeypatch):
    seen = {}

    def capture(_pair, _texts, _judge, config, _out, overwrite=False):
        seen["alphas"] = config.alphas
        return {}

    monkeypatch.setattr("interp.tuco_experiments.run_experiments", capture)
    monkeypatch.setattr("interp.tuco_experiments.load_experiment_texts", lambda split: TEXTS)
    monkeypatch.setattr("interp.models.load_pair", lambda *args, **kwargs: None)
    result = CliRunner().invoke(app, ["tuco", "experiments", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["alphas"] == list(PAPER_ALPHAS)


@pytest.mark.parametrize("profile", ["quick.toml", "full.toml"])
def test_pipeline_profiles_run_the_papers_alpha_grid(profile):
    """A user-facing profile runs the whole paper grid: its own list holds every paper alpha
    (extras allowed: they are flagged), or it has none and takes the default, the paper's."""
    import tomllib
    from pathlib import Path

    path = Path(__file__).parents[1] / "data" / "pipelines" / profile
    alphas = tomllib.loads(path.read_text()).get("tuco", {}).get("alpha")
    assert set(PAPER_ALPHAS) <= set(alphas or PAPER_ALPHAS), (profile, alphas)


def test_experiments_resume_and_refuse_a_different_config(tmp_path, monkeypatch):
    pair = tiny_pair("llama")
    first = run_experiments(pair, TEXTS, judge, small_config(), tmp_path)

    def fail(*_args, **_kwargs):
        raise AssertionError("a finished stage was recomputed")

    monkeypatch.setattr("interp.tuco_experiments.score_prompts", fail)
    monkeypatch.setattr("interp.tuco_experiments.complete", fail)
    monkeypatch.setattr("interp.tuco_experiments.generate", fail)
    assert run_experiments(pair, TEXTS, judge, small_config(), tmp_path) == first
    with pytest.raises(InterpError, match="different config"):
        run_experiments(pair, TEXTS, judge, small_config(seed=1), tmp_path)


def test_experiment_config_rejects_bad_values():
    with pytest.raises(InterpError, match="min_non_refusals"):
        small_config(min_non_refusals=9)
    with pytest.raises(InterpError, match="n_prompts"):
        small_config(n_prompts=0)


@pytest.fixture
def saved_pair(tmp_path):
    pair = tiny_pair("qwen2")
    return (
        str(save_tiny(pair.base, tmp_path / "base")),
        str(save_tiny(pair.chat, tmp_path / "chat")),
    )


def test_cli_score_prints_tuco_per_prompt(saved_pair):
    base, chat = saved_pair
    result = CliRunner().invoke(
        app, ["tuco", "score", "-p", "w1 w2", "-p", "w3", "--base", base, "--chat", chat]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["prompt"] for line in lines] == ["w1 w2", "w3"]
    assert all(0 < line["tuco"] < 1 for line in lines)


def test_cli_generate_prints_one_completion_per_alpha(saved_pair):
    base, chat = saved_pair
    result = CliRunner().invoke(
        app,
        ["tuco", "generate", "-p", "w1", "--base", base, "--chat", chat]
        + ["--alpha", "0", "--alpha", "0.5", "--max-new-tokens", "3"],
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["alpha"] for line in result.stdout.strip().splitlines()] == [0, 0.5]


def test_cli_different_architectures_give_a_one_line_error(tmp_path, monkeypatch, capsys):
    base = save_tiny(tiny_model("llama"), tmp_path / "llama")
    chat = save_tiny(tiny_model("qwen2"), tmp_path / "qwen2")
    argv = ["interp", "tuco", "score", "-p", "w1", "--base", str(base), "--chat", str(chat)]
    monkeypatch.setattr("sys.argv", argv)
    capsys.readouterr()
    assert run() == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: mismatched pair: architecture family differs: {str(base)!r} has llama, "
        f"{str(chat)!r} has qwen2"
    )


def test_adapter_hashes_name_only_builtins_with_an_adapter(tmp_path, monkeypatch):
    from interp import tuco_experiments
    from interp.builtin_models import BuiltinModel, sha256_file

    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"weights")
    builtins = {"tuned": BuiltinModel("tuned", "", (), base="plain", adapter_dir=adapter_dir)}
    monkeypatch.setattr(tuco_experiments, "BUILTINS", builtins)
    expected = sha256_file(adapter_dir / "adapter_model.safetensors")
    assert tuco_experiments.adapter_hashes(["plain", "tuned", "some/hf-id"]) == {"tuned": expected}
