"""`interp models` and `interp compare`: errors through the real entry point (a subprocess, as a
user runs it), the rest in-process."""

import json
import subprocess
import sys

from tiny_models import save_tiny, tiny_model, tiny_pair
from typer.testing import CliRunner

from interp.builtin_models import BUILTINS
from interp.cli.main import app


def interp_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "interp.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *named: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: mismatched pair: ")
    for text in named:
        assert text in lines[0]


def test_compare_of_a_mismatched_pair_is_a_one_line_error(tmp_path):
    base = save_tiny(tiny_model("gemma3"), tmp_path / "base")
    chat = save_tiny(tiny_model("qwen2"), tmp_path / "chat")
    result = interp_cli("compare", "--base", str(base), "--chat", str(chat))
    assert_one_line_error(result, "architecture family differs", "gemma3_text", "qwen2")


def test_compare_shows_top_tokens_of_both_models(tmp_path):
    pair = tiny_pair("gemma3")
    base = save_tiny(pair.base, tmp_path / "base")
    chat = save_tiny(pair.chat, tmp_path / "chat")
    result = CliRunner().invoke(
        app, ["compare", "--base", str(base), "--chat", str(chat), "--prompt", "w1 w2"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == (
        "prompt (chat template): '<bos><start_of_turn>user\\nw1 w2<end_of_turn>\\n"
        "<start_of_turn>model\\n'"
    )
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"base", "chat"}
    for line in rows.values():
        probabilities = [float(part.split()[-1]) for part in line.split(": ", 1)[1].split(", ")]
        assert len(probabilities) == 5
        assert probabilities == sorted(probabilities, reverse=True)


def test_models_lists_every_builtin_as_json():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [row["name"] for row in rows] == list(BUILTINS)
    assert all(isinstance(row["dequantized_cache"], bool) for row in rows)


def test_compare_of_mismatched_builtins_fails_fast_naming_the_mismatch(tmp_path, monkeypatch):
    """On a cold user cache: the GGUF headers decide, nothing is dequantized, nothing but the
    error line is printed (tests/test_user_cache.py has the rest of the cold-cache checks)."""
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cold"))
    result = interp_cli("compare", "--base", "gemma-3-270m", "--chat", "smollm2-135m-instruct")
    assert_one_line_error(
        result, "architecture family differs", "'gemma-3-270m' has gemma3_text", "llama"
    )
    assert not (tmp_path / "cold" / "dequantized").exists()
