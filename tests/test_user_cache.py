"""The user cache on a new machine: GGUF headers read without weights, the pair rule before any
dequantization, one line for a spec that cannot be found, and cached artifacts (the assembled
Gemma GGUF, dequantized folders) built once under a lock, whole or not at all.

Every test here gets its own empty `INTERP_CACHE_DIR` (a cold cache); none touches the user's."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tiny_models import save_tiny, tiny_model

from interp.builtin_models import (
    KILL_IN_ASSEMBLY_ENV,
    build_cached_folder,
    dequantized_cache_folder,
    gguf_sha256,
    is_prepared,
    sha256_file,
)
from interp.errors import InterpError
from interp.gguf_header import hf_model_type, read_gguf_header


@pytest.fixture
def cold_cache(tmp_path, monkeypatch):
    folder = tmp_path / "interp-cache"
    monkeypatch.setenv("INTERP_CACHE_DIR", str(folder))
    return folder


def write_gguf(
    path: Path, arch: str, d_model: int, n_layers: int, tokens: list[str], name: str = "test"
) -> Path:
    """A header-only GGUF (no tensors) written by the `gguf` package's own writer, with other
    metadata of every kind the reader has to walk past."""
    from gguf import GGUFValueType, GGUFWriter

    writer = GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_embedding_length(d_model)
    writer.add_block_count(n_layers)
    writer.add_uint32("test.uint32", 7)
    writer.add_float32("test.float32", 0.5)
    writer.add_bool("test.bool", True)
    writer.add_array("test.floats", [0.25, 0.5, 0.75])
    writer.add_token_list(tokens)
    writer.add_array("tokenizer.ggml.scores", [float(i) for i in range(len(tokens))])
    writer.add_key_value("test.strings", ["a", "bc"], GGUFValueType.ARRAY, GGUFValueType.STRING)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


TOKENS = ["<pad>", "<eos>", "▁the", "  ", "é", "日本", "w1"]


def test_gguf_header_reads_what_the_gguf_writer_wrote(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", "gemma3", 48, 3, TOKENS)
    header = read_gguf_header(path)
    assert (header.architecture, header.family, header.d_model, header.n_layers) == (
        "gemma3",
        "gemma3_text",
        48,
        3,
    )
    assert header.tokens == tuple(TOKENS)
    assert header.vocab == {token: index for index, token in enumerate(TOKENS)}


def test_gguf_family_follows_transformers_renames():
    assert hf_model_type("llama") == "llama"
    assert hf_model_type("llama", "Mistral-7B-Instruct") == "mistral"
    assert hf_model_type("qwen2moe") == "qwen2_moe"
    assert hf_model_type("gemma3") == "gemma3_text"


def test_a_truncated_or_foreign_gguf_is_one_clear_error(tmp_path):
    whole = write_gguf(tmp_path / "m.gguf", "llama", 48, 3, TOKENS).read_bytes()
    for cut in (2, 10, 30, len(whole) // 2, len(whole) - 20):
        truncated = tmp_path / f"cut{cut}.gguf"
        truncated.write_bytes(whole[:cut])
        with pytest.raises(InterpError, match="not a GGUF file|truncated or corrupt"):
            read_gguf_header(truncated)
    foreign = tmp_path / "foreign.gguf"
    foreign.write_bytes(b"PK\x03\x04" + whole[4:])
    with pytest.raises(InterpError, match="not a GGUF file"):
        read_gguf_header(foreign)


@pytest.mark.slow
def test_gguf_headers_of_the_builtins_match_their_dequantized_configs():
    """The header facts are the ones transformers gives the dequantized model (uses the user
    cache, which it prepares on a cold machine). Gemma's GGUF spells its multi-space tokens
    with spaces where the HF vocabulary has '▁': which is why a GGUF is compared token by token
    only with another GGUF."""
    from transformers import AutoConfig, AutoTokenizer

    from interp.builtin_models import GGUF_SOURCES, dequantized_folder

    for name, locate in GGUF_SOURCES.items():
        gguf_path, sha = locate()
        header = read_gguf_header(gguf_path)
        folder = dequantized_folder(gguf_path, sha, name)
        config = AutoConfig.from_pretrained(folder)
        assert (header.family, header.d_model, header.n_layers) == (
            config.model_type,
            config.hidden_size,
            config.num_hidden_layers,
        )
        vocab = AutoTokenizer.from_pretrained(folder).get_vocab()
        assert len(vocab) == len(header.tokens)
        from_header = header.vocab
        respelled = {t for t, index in from_header.items() if vocab.get(t) != index}
        assert all(token.strip() == "" for token in respelled), sorted(respelled)[:5]
        assert all(vocab["▁" * len(token)] == from_header[token] for token in respelled)


def test_a_gguf_pair_is_checked_from_headers_before_anything_is_dequantized(
    tmp_path, cold_cache, monkeypatch
):
    import interp.models as models

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("dequantized before the pair rule was checked")

    monkeypatch.setattr(models, "dequantized_folder", no_dequantizing)
    base = write_gguf(tmp_path / "base.gguf", "gemma3", 48, 3, TOKENS)
    wider = write_gguf(tmp_path / "wider.gguf", "gemma3", 64, 3, TOKENS)
    other_tokens = write_gguf(tmp_path / "other.gguf", "gemma3", 48, 3, TOKENS[:-1] + ["w2"])
    with pytest.raises(InterpError, match=r"d_model differs: .*base.gguf' has 48, .* has 64"):
        models.load_pair(str(base), str(wider))
    with pytest.raises(
        InterpError,
        match=r"tokenizers differ \(7 vs 7 tokens; first differing entry \('w[12]', 6\)",
    ):
        models.load_pair(str(base), str(other_tokens))
    qwen = save_tiny(tiny_model("qwen2"), tmp_path / "qwen")  # a GGUF against an HF folder
    with pytest.raises(InterpError, match="architecture family differs: .* gemma3_text, .* qwen2"):
        models.load_pair(str(base), str(qwen))
    assert not (cold_cache / "dequantized").exists()


def interp(*args: str, cache: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "interp.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "INTERP_CACHE_DIR": str(cache), **env},
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("offline", ["1", ""])
def test_an_unknown_model_spec_is_one_line_and_prepares_nothing(tmp_path, offline):
    """No hub retries before it (with or without a network), nothing assembled for the default
    chat model that comes second."""
    cache = tmp_path / "cache"
    result = interp("compare", "--base", "not/a-model", cache=cache, HF_HUB_OFFLINE=offline)
    line = one_error_line(result)
    assert line.startswith("error: cannot load model 'not/a-model': not a built-in")
    if offline:
        assert "HF_HUB_OFFLINE is set" in line
    assert not (cache / "gguf").exists() and not (cache / "dequantized").exists()
    line = one_error_line(interp("compare", "--base", "./no/such/folder", cache=cache))
    assert "no such file or folder" in line


def test_a_truncated_assembled_gguf_is_rebuilt(cold_cache):
    from interp.builtin_models import gemma_3_270m_gguf

    target, sha = gemma_3_270m_gguf()
    whole = target.stat().st_size
    with target.open("r+b") as handle:  # what a killed assembly of older code left
        handle.truncate(whole // 3)
    assert gemma_3_270m_gguf() == (target, sha)
    assert target.stat().st_size == whole and sha256_file(target) == sha


def test_a_kill_inside_the_gguf_assembly_leaves_nothing_the_rerun_trips_on(tmp_path):
    cache = tmp_path / "cache"
    args = ("compare", "--base", "gemma-3-270m", "--chat", "smollm2-135m-instruct")
    killed = interp(*args, cache=cache, **{KILL_IN_ASSEMBLY_ENV: "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = [p for p in (cache / "gguf").iterdir() if ".tmp-" in p.name]
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # killed half-way, in a temp file

    line = one_error_line(interp(*args, cache=cache))
    assert "architecture family differs" in line
    names = sorted(p.name for p in (cache / "gguf").iterdir())
    assert names == ["gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m.gguf.lock"]
    assert sha256_file(cache / "gguf" / names[0]) == gguf_sha256("gemma-3-270m")
    assert not (cache / "dequantized").exists()


BUILD_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from interp.builtin_models import build_cached_folder

    folder, log, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def build(staging):
        with log.open("a") as handle:
            handle.write(f"{os.getpid()}\\n")
        (staging / "config.json").write_text("{}")
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(float(mode))
        (staging / "tokenizer_config.json").write_text("{}")
        (staging / "model.safetensors").write_bytes(b"weights")

    print(build_cached_folder(folder, build, "building " + folder.name))
    """
)


def run_build(folder: Path, log: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BUILD_SCRIPT, str(folder), str(log), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_build_a_cached_folder_once_and_both_use_it(tmp_path):
    folder, log = tmp_path / "dequantized" / "abc", tmp_path / "builds.log"
    first = run_build(folder, log, "3")
    time.sleep(0.5)
    second = run_build(folder, log, "3")
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert all(out.strip() == str(folder) for out, _ in outputs)
    assert len(log.read_text().split()) == 1  # built once; the other waited and reused it
    assert is_prepared(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["abc", "abc.lock"]


def test_a_killed_build_leaves_nothing_the_next_run_trips_on(tmp_path):
    folder, log = tmp_path / "dequantized" / "abc", tmp_path / "builds.log"
    killed = run_build(folder, log, "kill")
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert not folder.exists() and [p.name for p in folder.parent.glob("abc.tmp-*")]
    (folder.parent / "abc.tmp").mkdir()  # the staging name of older code
    rerun = run_build(folder, log, "0")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert is_prepared(folder) and (folder / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["abc", "abc.lock"]
    assert err.strip() == "building abc"


def test_an_incomplete_or_failed_build_is_redone(tmp_path):
    folder = tmp_path / "abc"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # no weights: not prepared

    def failing(staging):
        (staging / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_cached_folder(folder, failing, "note")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abc.lock"]

    def complete(staging):
        for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
            (staging / name).write_text(name)

    assert build_cached_folder(folder, complete, "note") == folder and is_prepared(folder)
    assert build_cached_folder(folder, failing, "note") == folder  # prepared: not rebuilt


@pytest.mark.slow
def test_two_commands_started_together_on_a_cold_cache_both_succeed(cold_cache):
    """The first use of the default pair by two processes at once: one assembles and
    dequantizes under the lock, the other waits and reuses it; each prints the first-use line
    at most once and no progress bar (stderr is not a terminal)."""
    command = [sys.executable, "-m", "interp.cli.main", "compare", "--prompt", "hi"]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [process.communicate(timeout=1800) for process in processes]
    folder = dequantized_cache_folder(gguf_sha256("gemma-3-270m"))
    note = f"preparing gemma-3-270m weights (one time, ~1 min) into {folder}"
    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
        assert set(err.strip().splitlines()) <= {note}, err
        assert [line.split()[0] for line in out.splitlines()[1:]] == ["base", "chat"], out
    assert results[0][0] == results[1][0]
    assert any(note in err for _, err in results)
    assert is_prepared(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, folder.name + ".lock"]
    assert sorted(p.name for p in (cold_cache / "gguf").iterdir()) == [
        "gemma-3-270m-q4_k_m.gguf",
        "gemma-3-270m-q4_k_m.gguf.lock",
    ]


class FakeTerminal:
    """A stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_show_only_on_a_terminal(monkeypatch, terminal):
    import io

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    from interp.builtin_models import progress_bars_on_a_terminal_only

    stderr = FakeTerminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    original, enabled = gguf_utils.tqdm, hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # as by default (HF_HUB_DISABLE_PROGRESS_BARS unset)
    try:
        with progress_bars_on_a_terminal_only():
            assert hf_logging.is_progress_bar_enabled() == terminal
            for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors"):
                pass
            for _ in hf_logging.tqdm(range(3), desc="Loading weights"):
                pass
        assert hf_logging.is_progress_bar_enabled() and gguf_utils.tqdm is original
    finally:
        if not enabled:
            hf_logging.disable_progress_bar()
    written = stderr.text if terminal else stderr.getvalue()
    assert ("Converting and de-quantizing" in written) == terminal
    assert ("Loading weights" in written) == terminal
