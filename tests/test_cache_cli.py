"""`interp cache` end to end on tiny models saved as folders: a real SIGKILL then resume, two
processes (torch.distributed, gloo) against one, and bad input through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from cache_support import documents
from tiny_models import save_tiny, tiny_model, tiny_pair
from typer.testing import CliRunner

from interp.cache import ActivationCache, verify_cache
from interp.cli.main import app
from interp.errors import InterpError

N_TOKENS = 8000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    pair = tiny_pair()
    save_tiny(pair.base, root / "base")
    save_tiny(pair.chat, root / "chat")
    save_tiny(tiny_model("llama"), root / "llama")
    (root / "docs.txt").write_text("\n".join(documents(300, seed=4)))
    return root


def cache_args(root, out, tokens=N_TOKENS):
    return [
        "cache", "--pair", str(root / "base"), str(root / "chat"), "--layers", "1,3",
        "--mix", str(root / "docs.txt"), "--tokens", str(tokens), "--ctx", "32",
        "--batch-size", "4", "--shard-tokens", "100", "--dtype", "bf16", "--seed", "3",
        "--out", str(out),
    ]  # fmt: skip


def run_cli(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "interp.cli.main", *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )


def finish(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode()


@pytest.fixture(scope="module")
def uninterrupted(setup):
    out = setup / "uninterrupted"
    finish(run_cli(cache_args(setup, out)))
    return out


def shards_of(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    return [(s["file"], s["n_tokens"], s["sha256"]) for s in manifest["shards"]]


def test_resume_after_sigkill_equals_an_uninterrupted_run(setup, uninterrupted):
    out = setup / "killed"
    process = run_cli(cache_args(setup, out))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        manifest_file = out / "manifest.json"
        if manifest_file.exists():
            try:
                shards = json.loads(manifest_file.read_text())["shards"]
            except json.JSONDecodeError:
                shards = []
            if len(shards) >= 3:
                break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = json.loads((out / "manifest.json").read_text())
    assert not partial["complete"], "the run finished before the kill: raise N_TOKENS"
    finish(run_cli(cache_args(setup, out)))
    assert shards_of(out) == shards_of(uninterrupted)  # same bytes, shard for shard
    assert verify_cache(out) == []
    assert not list(out.glob("*.tmp*"))


def wait_for_shards(out, count, process):
    """Until the manifest in `out` records `count` shards (the run in `process` still going)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if len(json.loads((out / "manifest.json").read_text())["shards"]) >= count:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"{out} never recorded {count} shards")


def test_a_second_writer_of_a_cache_folder_is_refused_with_one_line(setup, uninterrupted):
    out = setup / "contested"
    first = run_cli(cache_args(setup, out))
    wait_for_shards(out, 1, first)
    first.send_signal(signal.SIGSTOP)  # hold the first writer mid-run, whatever the machine's speed
    try:
        second = run_cli(cache_args(setup, out))
        _, err = second.communicate(timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    err = err.decode()
    assert second.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"error: another process is writing the activation cache {str(out)!r}: wait for it to "
        "finish (or stop it), then rerun"
    )
    finish(first)
    assert shards_of(out) == shards_of(uninterrupted)
    assert verify_cache(out) == []


def test_two_processes_write_the_same_cache_as_one(setup, uninterrupted):
    out = setup / "two"
    finish(run_cli([*cache_args(setup, out), "--workers", "2"]))
    assert verify_cache(out) == []
    one, two = ActivationCache(uninterrupted), ActivationCache(out)
    assert two.manifest["n_shards"] == one.manifest["n_shards"] == N_TOKENS // 100
    a, b = next(one.iterate_sequential(N_TOKENS)), next(two.iterate_sequential(N_TOKENS))
    for name in ("token_ids", "seq_ids", "positions"):
        assert torch.equal(a.__dict__[name], b.__dict__[name])
    torch.testing.assert_close(a.acts, b.acts, rtol=2**-7, atol=1e-4)
    torch.testing.assert_close(one.mean_norms(), two.mean_norms())


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--layers": "9"}, "unknown layer '9'"),
        ({"--tokens": "0"}, "bad --tokens 0"),
        ({"--dtype": "int4"}, "unknown cache dtype"),
        ({"chat": "llama"}, "mismatched pair"),
    ],
)
def test_bad_input_through_the_cli_writes_nothing(setup, tmp_path, change, message):
    args = cache_args(setup, tmp_path / "out", tokens=200)
    for key, value in change.items():
        if key.startswith("--"):
            args[args.index(key) + 1] = value
        else:
            args[args.index(str(setup / key))] = str(setup / value)
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, InterpError), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_models_run_in_the_model_dtype_and_the_cache_keeps_its_storage_dtype(setup, tmp_path):
    """--model-dtype sets the dtype the models compute in, --dtype the one the cache stores: a
    bf16 model's activations stored as fp32 are bf16 values (no bits below bf16's 8-bit
    mantissa), a fp32 model's are not; `auto` is fp32 on the CPU."""
    from safetensors.torch import load_file

    acts = {}
    for model_dtype, storage in (("bf16", "fp32"), ("bfloat16", "bf16"), ("auto", "fp32")):
        out = tmp_path / f"{model_dtype}-{storage}"
        args = cache_args(setup, out, tokens=300)
        args[args.index("--dtype") + 1] = storage
        result = CliRunner().invoke(app, [*args, "--model-dtype", model_dtype])
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        stored = torch.cat([load_file(out / s["file"])["acts"] for s in manifest["shards"]])
        expected = torch.float32 if storage == "fp32" else torch.bfloat16
        assert manifest["dtype"] == str(expected).removeprefix("torch.")
        assert manifest["model_dtype"] == ("fp32" if model_dtype == "auto" else "bf16")
        assert stored.dtype == expected
        acts[model_dtype, storage] = stored
    bf16_model, fp32_model = acts["bf16", "fp32"], acts["auto", "fp32"]
    assert torch.equal(bf16_model, bf16_model.to(torch.bfloat16).float())
    assert not torch.equal(fp32_model, fp32_model.to(torch.bfloat16).float())
    assert torch.equal(acts["bfloat16", "bf16"], bf16_model.to(torch.bfloat16))
    # the same computation up to bf16 rounding: a few percent of the activations' norm
    assert (bf16_model - fp32_model).norm() / fp32_model.norm() < 0.05
    # a resume in another model dtype is refused, naming the one to pass
    args = cache_args(setup, tmp_path / "bf16-fp32", tokens=300)
    args[args.index("--dtype") + 1] = "fp32"
    result = CliRunner().invoke(app, [*args, "--model-dtype", "fp32"])
    message = str(result.exception)
    assert result.exit_code != 0 and "made with the models in bf16" in message
    assert "--model-dtype bf16 to resume it" in message


def test_a_cache_recorded_before_model_dtype_resumes_in_fp32_only(setup, tmp_path):
    """A manifest without `model_dtype` was written when every model ran in float32: a rerun in
    fp32 finds it complete, one in bf16 is refused with one line naming fp32."""
    out = tmp_path / "old"
    args = cache_args(setup, out, tokens=300)
    assert CliRunner().invoke(app, args).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["model_dtype"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    result = CliRunner().invoke(app, [*args, "--model-dtype", "fp32"])
    assert result.exit_code == 0, result.output
    _, stderr = run_cli([*args, "--model-dtype", "bf16"]).communicate(timeout=300)
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "made with the models in fp32" in lines[0] and "--model-dtype fp32" in lines[0]
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


def test_a_bad_model_dtype_is_one_line(setup, tmp_path):
    process = run_cli([*cache_args(setup, tmp_path / "c"), "--model-dtype", "int8"])
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "--model-dtype 'int8': expected auto, bf16, fp16 or fp32" in lines[0]
    assert not (tmp_path / "c").exists()
