"""The amplification generations and their row in the known-answer table; the CLI of
`interp weights`, `interp horizon`, `interp amplify` on tiny saved models."""

import json

import pytest
from tiny_models import save_tiny, tiny_pair

from crosscoders.diffing.amplify import AmplifyConfig, run_amplify
from crosscoders.diffing.evaluate_diffing import amplification_cells
from interp.amplification import logit_amplified
from interp.cli.main import run
from interp.generation import complete, decode_completions
from interp.tuco import tokenize_prompts

VOCABULARY = ["comet", "orbit"]


def write_generations(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generations.json").write_text(json.dumps(rows))


def row(alpha, completions, nll):
    return {
        "method": "amplification",
        "model": "chat",
        "alpha": alpha,
        "prompts": ["p"] * len(completions),
        "completions": completions,
        "nll": [nll] * len(completions),
    }


def test_amplification_cell_takes_the_largest_coherent_alpha(tmp_path):
    write_generations(
        tmp_path,
        [
            row(0.0, ["a quiet day at home", "bread and butter"], 2.0),
            row(1.0, ["a comet passed by", "bread and butter"], 2.0),
            row(2.0, ["the comet and its orbit", "an orbit of the sun"], 3.0),
            row(4.0, ["comet comet comet comet comet comet", "orbit orbit orbit"], 9.0),
        ],
    )
    cell, readings = amplification_cells("astro", tmp_path, VOCABULARY, max_nll=5.0)
    assert cell.method == "logit amplification" and cell.kind == "steering"
    assert cell.share == 1.0 and cell.baseline_share == 0.5  # alpha 2 vs chat (alpha 1)
    assert "alpha 2.0" in cell.detail and cell.recovered
    assert [r["coherent"] for r in readings] == [True, True, True, False]
    cell, _ = amplification_cells("astro", tmp_path, VOCABULARY, max_nll=2.5)
    assert cell.share == 0.0 and "no coherent alpha" in cell.detail
    missing, _ = amplification_cells("astro", tmp_path / "nowhere", VOCABULARY, 5.0)
    assert missing.kind == "none" and "interp amplify" in missing.detail


def test_run_amplify_generates_what_the_amplified_pair_generates(tmp_path):
    pair = tiny_pair("gemma3")
    rows = run_amplify(pair, tmp_path, AmplifyConfig(alphas=[3.0], n_prompts=2, max_new_tokens=6))
    assert [r["alpha"] for r in rows] == [0.0, 1.0, 3.0]
    batch = tokenize_prompts(pair, rows[0]["prompts"], padding_side="left")
    chat = decode_completions(pair.tokenizer, complete(pair.chat, **batch, max_new_tokens=6))
    base = decode_completions(pair.tokenizer, complete(pair.base, **batch, max_new_tokens=6))
    with logit_amplified(pair, 3.0):
        amplified = decode_completions(
            pair.tokenizer, complete(pair.chat, **batch, max_new_tokens=6)
        )
    assert rows[0]["completions"] == base and rows[1]["completions"] == chat
    assert rows[2]["completions"] == amplified
    assert all(len(r["nll"]) == 2 for r in rows)
    saved = json.loads((tmp_path / "generations.json").read_text())
    assert saved[2]["completions"] == amplified


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    pair = tiny_pair("gemma3")
    return str(save_tiny(pair.base, root / "base")), str(save_tiny(pair.chat, root / "chat"))


def test_commands_write_their_folders(saved_pair, tmp_path, capsys):
    base, chat = saved_pair
    models = ["--base", base, "--chat", chat]
    assert run(["weights", *models, "--out", str(tmp_path / "w"), "--intruder-k", "3"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # tiny_pair perturbs every parameter: all 2-D weights changed, each full rank
    assert printed["n_changed"] > 0 and printed["n_unchanged"] == 0
    assert (tmp_path / "w" / "matrices.parquet").is_file()
    assert run(["horizon", *models, "--out", str(tmp_path / "h"), "--n-prompts", "2",
                "--max-new-tokens", "4"]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "h" / "summary.json").read_text())
    assert summary["n_prompts"] == 2 and summary["classes"]
    assert run(["amplify", *models, "--out", str(tmp_path / "a"), "--n-prompts", "2",
                "--max-new-tokens", "4", "--alphas", "2"]) == 0  # fmt: skip
    assert [r["alpha"] for r in json.loads((tmp_path / "a" / "generations.json").read_text())] == [
        0.0,
        1.0,
        2.0,
    ]


def test_commands_refuse_bad_input_with_one_line(saved_pair, tmp_path, capsys):
    base, chat = saved_pair
    for args, named in [
        (["weights", "--base", base, "--adapter", str(tmp_path), "--out", str(tmp_path / "w")],
         "not a LoRA adapter folder"),
        (["weights", "--base", base, "--chat", chat, "--epsilon", "2", "--out",
          str(tmp_path / "w")], "epsilon"),
        (["amplify", "--base", base, "--chat", chat, "--n-prompts", "99", "--out",
          str(tmp_path / "a")], "n_prompts = 99"),
    ]:  # fmt: skip
        capsys.readouterr()
        assert run(args) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: ") and named in line
    assert not (tmp_path / "w").exists() and not (tmp_path / "a").exists()
