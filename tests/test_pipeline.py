"""The pipeline runner (interp/pipeline.py) and the quick pipeline end to end on tiny models."""

import json
from pathlib import Path

import pytest
from cache_support import documents
from tiny_models import save_tiny_gemma_pair_with_real_tokenizer

from interp.errors import InterpError
from interp.pipeline import PROFILES_DIR, load_config, plan, run_pipeline


def _config(out: Path) -> dict:
    return {
        "run": {"out": str(out), "base": "B", "chat": "C", "layer": 2},
        "cache": {"tokens": 100},
        "train": {"btk": {"dict_size": 8}, "l1": {"dict_size": 8, "activation": "relu_l1"}},
        "eval": {"splice": False},
        "analyze": {"n_prompts": 1},
        "tuco": {"n_prompts": 1},
    }


def test_plan_orders_steps_and_wires_folders(tmp_path):
    steps = plan(_config(tmp_path))
    names = [s.name for s in steps]
    assert names == [
        "cache",
        "train.btk",
        "train.l1",
        "eval.btk",
        "eval.l1",
        "analyze.btk",
        "analyze.l1",
        "tuco",
    ]
    cache, train_btk = steps[0], steps[1]
    assert cache.command == "cache" and cache.fixed["pair"] == ("B", "C")
    assert cache.fixed["layers"] == "2" and cache.options == {"tokens": 100}
    assert cache.fixed["out"] == tmp_path / "cache"
    assert train_btk.command == "train crosscoder"
    assert train_btk.fixed == {
        "out": tmp_path / "dictionaries" / "btk",
        "cache": tmp_path / "cache",
    }
    assert steps[3].command == "dict eval" and steps[5].fixed["dict_name"] == "btk"


def test_train_kind_chooses_the_command_and_is_no_option(tmp_path):
    config = _config(tmp_path)
    config["train"]["btk"]["kind"] = "sae"
    train_btk = plan(config)[1]
    assert train_btk.command == "train sae" and "kind" not in train_btk.options


def test_rerun_skips_done_steps_and_reruns_changed_ones(tmp_path):
    config = _config(tmp_path)
    calls: list[tuple[str, ...]] = []
    assert len(run_pipeline(config, calls.append, echo=lambda _: None)) == 8
    assert run_pipeline(config, calls.append, echo=lambda _: None) == []
    config["train"]["l1"]["dict_size"] = 16
    assert run_pipeline(config, calls.append, echo=lambda _: None) == ["train.l1"]
    assert len(calls) == 9


def test_other_weights_behind_the_same_spec_rerun_every_step(tmp_path):
    """A retrained chat-tune keeps the spec `gemma-3-270m-chat`: the pipeline must not skip steps
    done with the old weights. Here the chat model is a local folder whose weights change."""
    chat = tmp_path / "chat-model"
    chat.mkdir()
    (chat / "model.safetensors").write_bytes(b"old weights")
    config = _config(tmp_path / "run")
    config["run"]["chat"] = str(chat)
    calls: list[tuple[str, ...]] = []
    assert len(run_pipeline(config, calls.append, echo=lambda _: None)) == 8
    assert run_pipeline(config, calls.append, echo=lambda _: None) == []
    (chat / "model.safetensors").write_bytes(b"new weights, retrained")
    assert len(run_pipeline(config, calls.append, echo=lambda _: None)) == 8


def test_weights_identity_follows_the_chat_tune_adapter(tmp_path, monkeypatch):
    import dataclasses

    from interp import builtin_models

    adapter_dir = tmp_path / "chat-tune"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"v1")
    builtin = builtin_models.BUILTINS["gemma-3-270m-chat"]
    chat = dataclasses.replace(builtin, adapter_dir=adapter_dir)
    monkeypatch.setitem(builtin_models.BUILTINS, "gemma-3-270m-chat", chat)
    first = builtin_models.weights_identity("gemma-3-270m-chat")
    assert builtin_models.weights_identity("gemma-3-270m-chat") == first
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"v2")
    assert builtin_models.weights_identity("gemma-3-270m-chat") != first
    assert builtin_models.weights_identity("some-org/some-model") == "some-org/some-model"


def test_failed_step_is_not_recorded(tmp_path):
    config = _config(tmp_path)

    def invoke(step):
        if step.command.startswith("train"):
            raise InterpError("boom")

    with pytest.raises(InterpError, match="boom"):
        run_pipeline(config, invoke, echo=lambda _: None)
    assert run_pipeline(config, lambda step: None, only=["cache"], echo=lambda _: None) == []
    assert run_pipeline(config, lambda step: None, only=["train"], echo=lambda _: None) == [
        "train.btk",
        "train.l1",
    ]


def test_a_train_table_can_stream_from_the_runs_models_instead_of_the_cache(tmp_path):
    config = _config(tmp_path)
    config["train"]["btk"] = {"dict_size": 8, "source": "stream", "tokens": 4000}
    (train_btk,) = [s for s in plan(config) if s.name == "train.btk"]
    assert train_btk.command == "train crosscoder stream"
    assert {
        "base": "B",
        "chat": "C",
        "layers": "2",
        "tokens": 4000,
    }.items() <= train_btk.options.items()
    assert "cache" not in train_btk.fixed and "source" not in train_btk.options
    config["train"]["btk"]["base"] = "X"  # the stream's models are [run]'s
    with pytest.raises(InterpError, match="sets 'base', which the pipeline sets itself"):
        plan(config)
    del config["train"]["btk"]["base"]
    config["train"]["btk"]["source"] = "disk"
    with pytest.raises(InterpError, match='source = .disk.: expected "cache" or "stream"'):
        plan(config)


def test_a_streamed_train_step_runs_with_no_cache_anywhere(tmp_path):
    from tiny_models import save_tiny, tiny_pair
    from typer.testing import CliRunner

    from crosscoders.model_stream import STREAM_RECORD
    from interp.cli.main import app

    pair = tiny_pair()
    for role, loaded in zip(("base", "chat"), pair, strict=True):
        save_tiny(loaded, tmp_path / role)
    (tmp_path / "docs.txt").write_text("\n".join(documents(60, seed=4)))
    out = tmp_path / "run"
    (tmp_path / "stream.toml").write_text(
        f"[run]\nout = '{out}'\nbase = '{tmp_path / 'base'}'\nchat = '{tmp_path / 'chat'}'\n"
        "layer = 2\n[train.streamed]\nsource = 'stream'\n"
        f"mix = '{tmp_path / 'docs.txt'}'\nctx = 32\ndict_size = 32\nk = 4\nsteps = 4\n"
        "batch_size = 64\ndevice = 'cpu'\n"
    )
    result = CliRunner().invoke(app, ["run", str(tmp_path / "stream.toml")])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "dictionaries" / "streamed" / STREAM_RECORD).read_text())
    assert record["layers"] == [2] and record["n_tokens"] == 4 * 64
    assert [m["spec"] for m in record["models"]] == [str(tmp_path / "base"), str(tmp_path / "chat")]
    assert not (out / "cache").exists()
    assert json.loads((out / "pipeline" / "train.streamed.json").read_text())


def test_unknown_step_and_bad_config_are_clear_errors(tmp_path):
    with pytest.raises(InterpError, match="unknown steps"):
        run_pipeline(_config(tmp_path), lambda step: None, only=["nope"], echo=lambda _: None)
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nout = 'x'\n[caches]\n")
    with pytest.raises(InterpError, match="unknown sections"):
        load_config(bad)
    with pytest.raises(InterpError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("profile", ["quick.toml", "full.toml"])
def test_shipped_profiles_parse_and_plan_every_step(profile):
    steps = {s.name.split(".")[0] for s in plan(load_config(PROFILES_DIR / profile))}
    assert steps == {"cache", "train", "eval", "analyze", "tuco", "steer"}


def test_steer_step_names_a_trained_crosscoder_by_its_train_step():
    config = load_config(PROFILES_DIR / "quick.toml")
    config["run"]["out"] = "somewhere/run"
    (steer,) = [s for s in plan(config) if s.name == "steer"]
    assert Path(steer.options["crosscoder"]) == Path("somewhere/run/dictionaries/batchtopk")
    config["steer"]["crosscoder"] = "/elsewhere/coder"  # not a step name: passed as given
    (steer,) = [s for s in plan(config) if s.name == "steer"]
    assert steer.options["crosscoder"] == "/elsewhere/coder"


@pytest.mark.slow
def test_quick_pipeline_on_tiny_models_writes_everything_the_app_reads(tmp_path):
    from app.run_folder import RunFolder
    from interp.cli.pipeline_cmd import run_step as invoke

    base, chat = save_tiny_gemma_pair_with_real_tokenizer(tmp_path)
    config = load_config(PROFILES_DIR / "tiny.toml")
    config["run"].update(out=str(tmp_path / "run"), base=base, chat=chat)
    ran = run_pipeline(config, invoke, echo=lambda _: None)
    assert ran == [s.name for s in plan(config)]

    run = RunFolder(tmp_path / "run")
    info = run.info()
    assert info["base"] == base and info["chat"] == chat
    assert run.analysed_dictionaries() == ["batchtopk", "l1"]
    for name in ("batchtopk", "l1"):
        latents = run.latents(name)
        assert len(latents) == config["train"][name]["dict_size"]
        assert run.dictionary_eval(name)["reconstruction"]
        for relative in (
            "examples.parquet",
            "tokens.json",
            "causal.json",
            "token_shift.parquet",
            "report.md",
        ):
            assert run.has(f"analysis/{name}/{relative}"), relative
    summary = json.loads((tmp_path / "run" / "tuco" / "summary.json").read_text())
    assert 0.0 <= summary["tuco_mean"]["benign"] <= 1.0
    assert run.steering_maps(), "no steering map saved"
    assert run.has("steering/results.parquet")
    # a second run skips every step
    assert run_pipeline(config, invoke, echo=lambda _: None) == []


def test_a_step_with_workers_runs_its_command_under_torchrun_and_writes_what_one_process_does(
    tmp_path, monkeypatch
):
    """`workers = 2` in a table: the one step that becomes a command line (torchrun's worker
    processes); its cache equals the one-process step's, shard for shard. Both run matmuls on
    one thread (torchrun's workers get OMP_NUM_THREADS=1): another thread count sums in another
    order, and the last bits of float32 activations, so some bf16 values, differ."""
    import torch
    from cache_support import documents
    from tiny_models import save_tiny, tiny_pair

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()

    from interp.cli.pipeline_cmd import run_step

    pair = tiny_pair()
    save_tiny(pair.base, tmp_path / "base")
    save_tiny(pair.chat, tmp_path / "chat")
    (tmp_path / "docs.txt").write_text("\n".join(documents(100, seed=4)))
    shards = {}
    for workers in (1, 2):
        config = {
            "run": {
                "out": str(tmp_path / f"run{workers}"),
                "base": str(tmp_path / "base"),
                "chat": str(tmp_path / "chat"),
                "layer": 1,
            },
            "cache": {
                "tokens": 800, "ctx": 32, "batch_size": 4, "shard_tokens": 100,
                "mix": str(tmp_path / "docs.txt"), "device": "cpu", "workers": workers,
            },
        }  # fmt: skip
        torch.set_num_threads(1)
        try:
            assert run_pipeline(config, run_step, echo=lambda _: None) == ["cache"]
        finally:
            torch.set_num_threads(threads)
        manifest = json.loads((tmp_path / f"run{workers}" / "cache" / "manifest.json").read_text())
        shards[workers] = [(s["file"], s["sha256"]) for s in manifest["shards"]]
    assert len(shards[1]) == 8 and shards[2] == shards[1]


def test_demo_runs_its_profile_into_out_then_serves_the_app_there(tmp_path, monkeypatch):
    """`interp demo [--full] [--out] [--port] [--no-app]`: --quick / --full pick the profile,
    --out moves the run folder, and the app is served on it at --port unless --no-app."""
    from tiny_models import save_tiny, tiny_pair
    from typer.testing import CliRunner

    from interp import app_launch
    from interp.cli import pipeline_cmd
    from interp.cli.main import app

    pair = tiny_pair()
    for role, loaded in zip(("base", "chat"), pair, strict=True):
        save_tiny(loaded, tmp_path / role)
    (tmp_path / "docs.txt").write_text("\n".join(documents(60, seed=4)))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for profile, tokens in (("quick", 128), ("full", 192)):
        (profiles / f"{profile}.toml").write_text(
            f"[run]\nout = '{tmp_path / 'elsewhere'}'\nbase = '{tmp_path / 'base'}'\n"
            f"chat = '{tmp_path / 'chat'}'\nlayer = 2\n[cache]\ntokens = {tokens}\nctx = 32\n"
            f"mix = '{tmp_path / 'docs.txt'}'\ndevice = 'cpu'\n"
        )
    monkeypatch.setattr(pipeline_cmd, "PROFILES_DIR", profiles)
    served = []
    monkeypatch.setattr(app_launch.os, "execve", lambda path, argv, env: served.append((argv, env)))

    quick, full = tmp_path / "quick", tmp_path / "full"
    result = CliRunner().invoke(app, ["demo", "--out", str(quick), "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert json.loads((quick / "cache" / "manifest.json").read_text())["n_tokens"] == 128
    ((argv, env),) = served
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert env[app_launch.RUN_FOLDER_ENV] == str(quick.resolve())

    result = CliRunner().invoke(app, ["demo", "--full", "--out", str(full), "--no-app"])
    assert result.exit_code == 0, result.output
    assert json.loads((full / "cache" / "manifest.json").read_text())["n_tokens"] == 192
    assert len(served) == 1 and not (tmp_path / "elsewhere").exists()
