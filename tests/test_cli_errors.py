"""The CLI's error contract, through the installed `interp` console script as a user runs it: every
user error (typer's usage errors of each kind, an InterpError, a value a check of
interp/cli/validators.py refuses, a bad pipeline config) is one line on stderr starting with
`error:`, exit code 2, no traceback, nothing written; the exit code of a command is its outcome
(its own code, 130 on Ctrl-C)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import typer
import typer.main
from cache_support import documents
from tiny_models import save_tiny, tiny_pair
from typer.testing import CliRunner

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.io import save_crosscoder
from interp.cli import main as cli_main
from interp.cli.main import INTERRUPTED, INTERRUPTED_LINE, run
from interp.cli.pipeline_cmd import check_steps
from interp.pipeline import PROFILES_DIR, load_config, plan

INTERP = Path(sys.executable).parent / "interp"  # the console script pip installed
README = Path(__file__).resolve().parents[1] / "README.md"


def interp(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(INTERP), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *named: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no warning, progress bar or usage block before it
    assert lines[0].startswith("error: ") and lines[0].strip() != "error:"
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def assert_one_line_error_in_process(args: list[object], capsys, *named: str) -> str:
    """The same contract through `run()` (what the script calls), for the variants of a kind
    whose first case goes through the script: a subprocess costs seconds of start-up."""
    capsys.readouterr()
    code = run([str(arg) for arg in args])
    err = capsys.readouterr().err
    return assert_one_line_error(subprocess.CompletedProcess(args, code, "", err), *named)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny base/chat pair saved as folders and a text file of documents (a --mix recipe)."""
    root = tmp_path_factory.mktemp("cli-errors")
    pair = tiny_pair()
    save_tiny(pair.base, root / "base")
    save_tiny(pair.chat, root / "chat")
    (root / "docs.txt").write_text("\n".join(documents(300, seed=4)))
    return root


def cache_args(root: Path, out: Path, tokens: int = 400) -> list[str]:
    return [
        "cache", "--pair", str(root / "base"), str(root / "chat"), "--layers", "1",
        "--mix", str(root / "docs.txt"), "--tokens", str(tokens), "--ctx", "32",
        "--batch-size", "4", "--shard-tokens", "100", "--out", str(out),
    ]  # fmt: skip


# -- typer's usage errors: each kind its parser raises ------------------------------------------


@pytest.mark.parametrize(
    "args,named",
    [
        (["bogus"], ["No such command 'bogus'"]),  # unknown command
        (["cache", "--bogus", "1"], ["No such option: --bogus"]),  # unknown option
        (["train", "crosscoder", "--cache", "x", "--out", "y"], ["'--dict-size'"]),  # missing
        (["cache", "--tokens", "abc"], ["'--tokens'", "'abc'"]),  # value of the wrong type
        (["cache", "verify"], ["Missing argument 'path'"]),  # missing argument
        (
            ["tuco", "score", "-p", "hi", "--model-dtype", "int8"],
            ["--model-dtype", "'int8'", "float32"],
        ),
    ],
    ids=["unknown-command", "unknown-option", "missing-option", "bad-type", "missing-argument",
         "bad-choice"],
)  # fmt: skip
def test_usage_errors_are_one_line_exit_2(args, named):
    line = assert_one_line_error(interp(*args), *named)
    # parser errors point at the command's help; a value an option's check refused (`bad --X`,
    # interp/cli/validators.py) says what it expected instead
    assert (
        f"(try `interp {args[0]}" in line or args == ["bogus"] or line.startswith("error: bad --")
    )


def test_interp_error_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "missing.toml"
    assert_one_line_error(interp("run", missing), f"pipeline config {str(missing)!r} does not")


def test_a_group_without_its_command_shows_its_help_and_exits_2():
    result = interp("train")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "crosscoder" in result.stdout and "sae" in result.stdout


# -- values refused before anything loads or is written -----------------------------------------


def _can_create_files(folder: Path) -> bool:
    try:
        handle = os.open(folder / ".probe", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except OSError:
        return False
    os.close(handle)
    (folder / ".probe").unlink()
    return True


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder this process cannot create files in: read-only permission bits, or (as root,
    who writes through them) /sys, where no one can."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if _can_create_files(folder):
        folder = Path("/sys")
        if not folder.is_dir() or _can_create_files(folder):
            pytest.skip("no folder here that this process cannot write into")
    yield folder
    (tmp_path / "read-only").chmod(0o755)


def test_unwritable_training_out_is_one_line(tmp_path, unwritable_folder):
    """Before: a PermissionError traceback at the first write; now refused at parse time."""
    out = unwritable_folder / "dictionary"
    result = interp("train", "crosscoder", "--cache", tmp_path, "--out", out, "--dict-size", 8)
    assert_one_line_error(result, f"bad --out {str(out)!r}", "cannot create files in")


@pytest.mark.parametrize(
    "change,named",
    [
        ({"--lr": "-0.001"}, ["bad --lr -0.001: expected a number > 0"]),
        ({"--lr": "0"}, ["bad --lr 0.0: expected a number > 0"]),
        ({"--batch-size": "0"}, ["bad --batch-size 0: expected a number > 0"]),
        ({"--steps": "0"}, ["bad --steps 0"]),
        ({"--steps": "-5"}, ["bad --steps -5"]),
        ({"--warmup-steps": "-1"}, ["bad --warmup-steps -1: expected a number >= 0"]),
    ],
)
def test_bad_training_values_are_one_line(tmp_path, capsys, change, named):
    """Before: a negative lr trained, --batch-size 0 gave a ZeroDivisionError traceback."""
    args = ["train", "crosscoder", "--cache", tmp_path / "no-cache", "--out", tmp_path / "out",
            "--dict-size", "8"]  # fmt: skip
    for flag, value in change.items():
        args += [flag, value]
    if change == {"--lr": "-0.001"}:
        assert_one_line_error(interp(*args), *named)
    else:
        assert_one_line_error_in_process(args, capsys, *named)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    "args",
    [
        ["cache", "--out", "out"],
        ["train", "sae", "--cache", "c", "--out", "o", "--dict-size", "8"],
        ["dict", "eval", "d", "--cache", "c"],
        ["tuco", "score", "-p", "hi"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_cuda_on_a_machine_without_it_is_one_line(tmp_path, monkeypatch, capsys, args):
    """Before: an AssertionError traceback from torch once the models were loaded."""
    monkeypatch.chdir(tmp_path)
    if args[0] == "cache":
        line = assert_one_line_error(interp(*args, "--device", "cuda"), "bad --device 'cuda'")
    else:
        line = assert_one_line_error_in_process(
            [*args, "--device", "cuda"], capsys, "bad --device 'cuda'"
        )
    assert "CUDA is not available" in line and "use --device cpu" in line


def test_device_check_on_a_machine_with_one_gpu(monkeypatch):
    """The branch a CUDA machine takes (none here): cuda and cuda:0 pass, cuda:1 names the count."""
    from interp.cli import validators

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    param = SimpleNamespace(opts=["--device"], name="device")
    assert validators.device(param, "cuda") == "cuda"
    assert validators.device_or_auto(param, "cuda:0") == "cuda:0"
    assert validators.device_or_auto(param, "auto") == "auto"
    with pytest.raises(validators.BadOption, match=r"has 1 CUDA device\(s\): expected cuda:0"):
        validators.device(param, "cuda:1")


@pytest.mark.parametrize(
    "change,named",
    [
        ({"--tokens": "0"}, ["bad --tokens 0"]),
        ({"--tokens": "-3"}, ["bad --tokens -3"]),
        ({"--batch-size": "0"}, ["bad --batch-size 0"]),
        ({"--mix": "wiki:0,chat:0"}, ["bad --mix 'wiki:0,chat:0'", "expected a positive number"]),
        ({"--mix": "wiki:-1,chat:2"}, ["bad --mix", "expected a positive number"]),
        ({"--mix": "wiki:1,poems:1"}, ["unknown dataset recipe 'poems'", "chat-benign"]),
        ({"--mix": "missing.txt"}, ["dataset file 'missing.txt' does not exist"]),
        ({"--dtype": "int4"}, ["bad --dtype 'int4'", "bf16"]),
        ({"--device": "tpu"}, ["bad --device 'tpu'", "expected cpu, cuda, cuda:N or mps"]),
        # needs the model's depth: found after the (silent) load of the tiny pair
        ({"--layers": "9"}, ["unknown layer '9'"]),
    ],
)
def test_bad_cache_input_is_one_line_and_writes_nothing(tiny, tmp_path, capsys, change, named):
    """Before: a traceback or 3 lines (two "Loading weights" progress bars, then the error)."""
    args = cache_args(tiny, tmp_path / "out")
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    if set(change) & {"--mix", "--layers"} and change != {"--mix": "wiki:-1,chat:2"}:
        assert_one_line_error(interp(*args), *named)  # --layers 9: after the models load
    else:
        assert_one_line_error_in_process(args, capsys, *named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,named",
    [
        (["dict", "eval", "D", "--cache", "C", "--texts-file", "none.txt"],
         "bad --texts-file 'none.txt': no such file"),
        (["dict", "eval", "D", "--cache", "C", "--batch-size", "0"], "bad --batch-size 0"),
        (["dict", "export", "D", "--out", "o", "--context-size", "0"], "bad --context-size 0"),
        (["analyze", "R", "--split", "test"], "bad --split 'test': expected one of train"),
        (["analyze", "R", "--device", "gpu"], "bad --device 'gpu'"),
        (["tuco", "experiments", "--out", "o", "--n-prompts", "0"], "bad --n-prompts 0"),
        (["tuco", "generate", "-p", "hi", "--max-new-tokens", "-1"], "bad --max-new-tokens -1"),
        (["steer", "train", "--out", "o", "--lr", "0"], "bad --lr 0.0"),
        (["steer", "eval", "--out", "o", "--steps", "0"], "bad --steps 0"),
        (["steer", "eval", "--out", "o", "--sparsity", "-1"], "bad --sparsity -1.0"),
        (["steer", "generate", "M", "--max-new-tokens", "0"], "bad --max-new-tokens 0"),
        (["run", "c.toml", "--out", "c.toml"], "bad --out 'c.toml': it is a file"),
        (["demo", "--port", "70000"], "bad --port 70000: expected a TCP port in 1..65535"),
        (["app", "R", "--port", "0"], "bad --port 0"),
        (["compare", "--top", "0"], "bad --top 0"),
        (["organism", "card", "--n-prompts", "0"], "bad --n-prompts 0"),
        (["adl", "--out", "o", "--n-texts", "0"], "bad --n-texts 0"),
        (["diff-sae", "R", "--lr", "-1"], "bad --lr -1.0"),
        (["change-profile", "R", "--batch-size", "0"], "bad --batch-size 0"),
        (["evaluate-diffing", "c.toml", "--max-nll", "0"], "bad --max-nll 0.0"),
    ],
    ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else None,
)  # fmt: skip
def test_bad_values_of_every_command_are_one_line(tmp_path, monkeypatch, capsys, args, named):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("")
    assert_one_line_error_in_process(args, capsys, named)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c.toml"]  # nothing written


def test_dict_export_takes_the_source_name_of_the_readme(tmp_path):
    """`interp dict export D --source chat` (the README's tour) exports the source named chat:
    the same bytes as its index; an unknown name lists the names."""
    config = CrossCoderConfig(
        n_sources=2, d_model=8, dict_size=16, k=4, activation="topk",
        sources=[Source("m-base", 3, "base"), Source("m-chat", 3, "chat")],
    )  # fmt: skip
    torch.manual_seed(0)
    coder = CrossCoder(config)
    with torch.no_grad():  # distinct sources (the initialisation may tie them)
        for parameter in coder.parameters():
            parameter.copy_(torch.randn_like(parameter))
    folder = save_crosscoder(coder, tmp_path / "dictionary")
    runner = CliRunner()
    for source, out in (("chat", "by-name"), ("1", "by-index"), ("base", "base")):
        args = ["dict", "export", str(folder), "--source", source, "--context-size", "128",
                "--out", str(tmp_path / out)]  # fmt: skip
        result = runner.invoke(cli_main.app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    weights = "sae_weights.safetensors"
    by_name, by_index = (tmp_path / name / weights for name in ("by-name", "by-index"))
    assert by_name.read_bytes() == by_index.read_bytes()
    assert by_name.read_bytes() != (tmp_path / "base" / weights).read_bytes()
    assert (
        json.loads((tmp_path / "by-name" / "cfg.json").read_text())["metadata"]["model_name"]
        == "m-chat"
    )
    result = interp("dict", "export", folder, "--source", "instruct", "--context-size", "128",
                    "--out", tmp_path / "x")  # fmt: skip
    assert_one_line_error(result, "unknown source 'instruct'", "['base', 'chat']")


def _readme_tour() -> list[list[str]]:
    block = README.read_text().split("## A tour of the CLI", 1)[1].split("```bash", 1)[1]
    text = block.split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("argv", _readme_tour(), ids=lambda argv: " ".join(argv[1:3]))
def test_every_command_of_the_readme_tour_parses(argv, tmp_path, monkeypatch):
    """Each line as printed parses against the real command (options, types, checks)."""
    monkeypatch.chdir(tmp_path)  # its --out folders are relative
    assert argv[0] == "interp"
    command, args = typer.main.get_command(cli_main.app), argv[1:]
    while hasattr(command, "commands") and args and args[0] in command.commands:
        command = command.commands[args.pop(0)]
    command.make_context(" ".join(argv[:3]), args)  # raises on any option it would refuse


# -- pipeline configs: checked before the first step runs ---------------------------------------


def _pipeline(tiny: Path, tmp_path: Path, extra: str) -> Path:
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[run]\nout = "{tmp_path / "run"}"\nbase = "{tiny / "base"}"\nchat = "{tiny / "chat"}"\n'
        f'layer = 1\n[cache]\ntokens = 200\nctx = 32\nmix = "{tiny / "docs.txt"}"\n'
        f"[train.btk]\ndict_size = 16\nk = 4\nbatch_size = 64\n{extra}\n"
    )
    return config


@pytest.mark.parametrize(
    "extra,named",
    [
        ("bogus = 1", ["[train.btk] has no option 'bogus'", "dict_size", "lr"]),
        ('steps = "abc"', ["[train.btk] steps = 'abc'", "valid integer"]),
        ("lr = -1.0", ["[train.btk] lr = -1.0: expected a number > 0"]),
        ('device = "cuda:7"', ["[train.btk] device = 'cuda:7'"]),
        ('overwrite = "yes"', ["[train.btk] overwrite = 'yes': expected true or false"]),
        ("lr = [0.1, 0.2]", ["[train.btk] lr = [0.1, 0.2]: expected one value"]),
        ('kind = "vae"', ["[train.btk] kind = 'vae'", "crosscoder, sae"]),
        ('out = "elsewhere"', ["[train.btk] sets 'out'"]),
        ("[eval]\nsplice = 3", ["[eval] splice = 3: expected true or false"]),
        ('[analyze]\nsplit = "test"', ["[analyze] split = 'test'", "train, validation, all"]),
        ("[tuco]\nn_prompt = 4", ["[tuco] has no option 'n_prompt'", "n_prompts"]),
        ("[steer]\nstep = 4", ["[steer] has no option 'step'", "steps"]),
    ],
)
def test_bad_pipeline_config_is_one_line_before_the_first_step(
    tiny, tmp_path, capsys, extra, named
):
    """Before: the steps ran until the bad one, which failed with a traceback."""
    config = _pipeline(tiny, tmp_path, extra)
    if extra in ("bogus = 1", 'steps = "abc"'):
        assert_one_line_error(interp("run", config), "pipeline.toml", *named)
    else:
        assert_one_line_error_in_process(["run", config], capsys, "pipeline.toml", *named)
    assert not (tmp_path / "run").exists()  # not even the cache step ran


def test_science_profile_steps_are_checked_before_the_first_organism_runs(tmp_path, capsys):
    profile = tmp_path / "science.toml"
    profile.write_text(
        f'[run]\nout = "{tmp_path / "run"}"\nlayer = 1\n'
        '[organisms.a]\nbase = "B"\nchat = "C"\nvocabulary = ["x"]\n'
        '[organisms.b]\nbase = "B"\nchat = "C"\nvocabulary = ["y"]\n'
        "[cache]\ntokens = 100\n[adl]\nn_text = 5\n"
    )
    assert_one_line_error_in_process(
        ["evaluate-diffing", profile], capsys, "[organisms.a]", "[adl] has no option 'n_text'"
    )
    assert not (tmp_path / "run").exists()


def test_pipeline_run_table_keys_are_checked(tiny, tmp_path, capsys):
    config = _pipeline(tiny, tmp_path, "")
    config.write_text(config.read_text().replace("layer = 1", "layers = 1"))
    assert_one_line_error_in_process(["run", config], capsys, "[run] has no key 'layers'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("profile", ["quick.toml", "full.toml", "tiny.toml", "science.toml"])
def test_shipped_profiles_use_only_real_options(profile, tmp_path, monkeypatch):
    """Every key of every shipped profile is an option of its command; where the machine has
    what they ask for (CPU profiles), every step parses as the command would parse it."""
    monkeypatch.chdir(tmp_path)
    if profile == "science.toml":  # a pipeline per organism (crosscoders.diffing.science)
        from crosscoders.diffing.science import organism_pipeline, organisms_of, read_profile

        profile_config = read_profile(PROFILES_DIR / profile)
        (organism,) = organisms_of(profile_config, ["chat-tune"])  # one organism is enough
        config = organism_pipeline(profile_config, organism, tmp_path / "run")
    else:
        config = load_config(PROFILES_DIR / profile)
    config["run"]["out"] = str(tmp_path / "run")
    steps = plan(config)
    check_steps(steps, [], profile)
    if profile != "full.toml":  # full asks for CUDA
        check_steps(steps, steps, profile)
    assert not (tmp_path / "run").exists()


# -- exit codes are outcomes ---------------------------------------------------------------------


def _app_exiting_with(error: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        raise error

    @app.command()
    def other() -> None:  # two commands: `fail` is a sub-command, as in interp
        pass

    return app


def test_main_returns_the_exit_code_of_the_command(monkeypatch):
    """Before: main() dropped the code typer returns (`cache verify` on a damaged cache, a
    failed `--workers 2` run and Ctrl-C all exited 0)."""
    monkeypatch.setattr(cli_main, "app", _app_exiting_with(typer.Exit(code=3)))
    assert run(["fail"]) == 3
    assert run(["other"]) == 0


def test_ctrl_c_in_a_command_is_130_and_one_line(monkeypatch, capsys):
    monkeypatch.setattr(cli_main, "app", _app_exiting_with(KeyboardInterrupt()))
    assert run(["fail"]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines() == [INTERRUPTED_LINE]


def test_ctrl_c_in_a_pipeline_step_stops_the_pipeline_as_ctrl_c(tiny, tmp_path, monkeypatch):
    """A step's Ctrl-C is not "step failed" (exit 2): the pipeline stops as interrupted, and
    the step is not recorded as done."""
    import interp.cache.command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(interp.cache.command, "cache_activations", interrupted)
    assert run(["run", str(_pipeline(tiny, tmp_path, "")), "--steps", "cache"]) == INTERRUPTED
    assert not (tmp_path / "run" / "pipeline" / "cache.json").exists()


def test_damaged_cache_verify_exit_code_reaches_the_shell(tiny, tmp_path):
    out = tmp_path / "cache"
    result = CliRunner().invoke(cli_main.app, cache_args(tiny, out), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert interp("cache", "verify", out).returncode == 0
    shard = sorted(out.glob("shard-*"))[0]
    shard.write_bytes(shard.read_bytes()[:-64])  # truncated
    result = interp("cache", "verify", out)
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_sigint_during_a_command_exits_130_with_one_line(tiny, tmp_path):
    out = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [str(INTERP), *cache_args(tiny, out, tokens=50_000)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # as in a terminal: a test run started in the background (`cmd &` without job control,
        # as CI may start it) ignores SIGINT, and a child inherits that, so Ctrl-C would be lost
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("shard-*")):
        time.sleep(0.05)  # running: its first shard is written
    assert process.poll() is None, "the command ended before the interrupt: raise --tokens"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == INTERRUPTED, stderr
    assert "Traceback" not in stderr
    lines = [line for line in re.split(r"[\r\n]", stderr) if line.strip()]
    assert lines[-1] == INTERRUPTED_LINE  # after the command's own progress bar
    assert [line for line in lines if not line.startswith("cache:")] == [INTERRUPTED_LINE]
