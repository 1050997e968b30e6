"""`interp run CONFIG` (any subset of a pipeline's steps) and `interp demo` (the main job on the
default pair: a built-in pipeline profile, then the app on its run folder)."""

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli.options import options_from, options_from_table
from interp.cli.torchrun import torchrun_command
from interp.command_options import AppOptions, DemoOptions, RunOptions
from interp.errors import InterpError
from interp.options import comma_separated
from interp.pipeline import PROFILES_DIR, STREAMED, Step, load_config, plan, run_pipeline, select


@dataclass(frozen=True)
class StepCommand:
    """What a pipeline step of one `interp` command runs: the options dataclasses its table is
    built into (the ones the command's CLI options come from) and the library function the
    command calls, `function(*options, **step.fixed)`; both as "module:name", imported when a
    pipeline runs (`interp --help` imports no torch)."""

    option_classes: tuple[str, ...]
    function: str


TRAIN_OPTIONS = (
    "crosscoders.train_options:TrainOptions",
    "crosscoders.train_options:TrainControls",
)
DIFFING = "crosscoders.diffing"
STEP_COMMANDS = {
    "cache": StepCommand(
        ("interp.command_options:CacheOptions",), "interp.cache.command:cache_activations"
    ),
    "train crosscoder": StepCommand(TRAIN_OPTIONS, "crosscoders.train_run:train_step"),
    "train sae": StepCommand(
        (*TRAIN_OPTIONS, "crosscoders.train_options:SaeSourceOptions"),
        "crosscoders.train_run:train_step",
    ),
    # source = "stream": the stream's options (and [run]'s models and layer) instead of a cache
    f"train crosscoder{STREAMED}": StepCommand(
        (*TRAIN_OPTIONS, "crosscoders.train_options:StreamSpec"),
        "crosscoders.train_run:train_streamed_step",
    ),
    f"train sae{STREAMED}": StepCommand(
        (
            *TRAIN_OPTIONS,
            "crosscoders.train_options:SaeSourceOptions",
            "crosscoders.train_options:StreamSpec",
        ),
        "crosscoders.train_run:train_streamed_step",
    ),
    "dict eval": StepCommand(
        ("crosscoders.eval_run:EvalOptions",), "crosscoders.eval_run:evaluate_dictionary"
    ),
    "analyze": StepCommand((f"{DIFFING}.options:AnalyzeOptions",), f"{DIFFING}.commands:analyze"),
    "diff-sae": StepCommand(
        (f"{DIFFING}.options:DiffSaeOptions",), f"{DIFFING}.commands:difference_sae"
    ),
    "adl": StepCommand((f"{DIFFING}.options:AdlOptions",), f"{DIFFING}.commands:adl"),
    "change-profile": StepCommand(
        (f"{DIFFING}.options:ChangeProfileOptions",), f"{DIFFING}.commands:change_profile"
    ),
    "tuco experiments": StepCommand(
        ("interp.command_options:TucoExperimentOptions",),
        "interp.tuco_experiments:tuco_experiments",
    ),
    "steer eval": StepCommand(
        (
            "steering.options:SteerEvalOptions",
            "steering.options:LineasOptions",
            "steering.options:LatentOptions",
        ),
        "steering.evaluate:evaluate_steering",
    ),
    "weights": StepCommand((f"{DIFFING}.options:WeightsOptions",), f"{DIFFING}.commands:weights"),
    "horizon": StepCommand((f"{DIFFING}.options:HorizonOptions",), f"{DIFFING}.commands:horizon"),
    "amplify": StepCommand((f"{DIFFING}.options:AmplifyOptions",), f"{DIFFING}.commands:amplify"),
}


def _named(reference: str) -> Any:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def _command_of(step: Step, source: str = "") -> StepCommand:
    where = f"{source}: " if source else ""
    if step.command not in STEP_COMMANDS:
        kinds = sorted({c.split()[1] for c in STEP_COMMANDS if c.startswith("train ")})
        kind = step.command.removesuffix(STREAMED).removeprefix("train ")
        raise InterpError(
            f"{where}[{step.table}] kind = {kind!r}: expected one of {', '.join(kinds)}"
        )
    return STEP_COMMANDS[step.command]


def step_options(step: Step, source: str = "", *, run_checks: bool = True) -> list[Any]:
    """The step's options dataclasses, built from its table (one line naming the table and the
    key for an unknown key, a value of the wrong type or one its check refuses)."""
    classes = [_named(reference) for reference in _command_of(step, source).option_classes]
    where = f"{source}: [{step.table}]" if source else f"[{step.table}]"
    return options_from_table(classes, step.options, where, run_checks=run_checks)


def check_steps(steps: Sequence[Step], selected: Sequence[Step], source: str) -> None:
    """Before the first step runs: every table key is an option of its step's command with a
    value of its type, and the values of the selected steps pass their checks (ranges, devices,
    files, mixtures) as on the command line."""
    for step in steps:
        step_options(step, source, run_checks=step in selected)


def run_step(step: Step) -> None:
    """Run one pipeline step: the library function behind its command, in this process (`workers
    = N` > 1: that command under torchrun, whose workers each run it)."""
    options = step_options(step)
    workers = max((getattr(group, "workers", 1) for group in options), default=1)
    if workers > 1:
        _run_under_torchrun(step, workers)
        return
    _named(_command_of(step).function)(*options, **step.fixed)


def _run_under_torchrun(step: Step, workers: int) -> None:
    """The step's command line, run by `workers` torchrun processes: the one place a step is
    argv, because the workers are new processes."""
    import subprocess

    argv = step.command.removesuffix(STREAMED).split()
    for key, value in {**step.fixed, **step.options}.items():
        if key == "workers" or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    code = subprocess.run(torchrun_command(workers, argv), check=False).returncode
    if code != 0:
        raise InterpError(f"step {step.name} under torchrun ({workers} workers) exited with {code}")


def run_pipeline_file(options: RunOptions, config_path: Path) -> Path:
    """`interp run CONFIG`: the pipeline config at `config_path`, checked whole before its first
    step, then its steps (all, or `options.steps`) into its run folder (`options.out` overrides
    [run] out); returns the run folder."""
    config = load_config(config_path)
    if options.out is not None:
        config["run"]["out"] = str(options.out)
    only = comma_separated(options.steps) if options.steps else None
    try:
        planned = plan(config)
    except InterpError as error:
        raise InterpError(f"{config_path}: {error}") from None
    check_steps(planned, select(planned, only), str(config_path))
    run_pipeline(config, run_step, only=only, echo=typer.echo)
    return Path(config["run"]["out"])


def run_demo(options: DemoOptions) -> None:
    """`interp demo`: the quick (or full) built-in profile into its run folder, then the app on
    it unless `options.no_app`."""
    profile = PROFILES_DIR / ("full.toml" if options.full else "quick.toml")
    folder = run_pipeline_file(RunOptions(out=options.out), profile)
    typer.echo(f"run folder: {folder}")
    if not options.no_app:
        from interp.app_launch import serve_app

        serve_app(AppOptions(port=options.port), folder, echo=typer.echo)


@options_from("options", RunOptions)
def run(
    config: Annotated[
        Path, typer.Argument(help="pipeline config (TOML), e.g. data/pipelines/quick.toml")
    ],
    options: RunOptions,
) -> None:
    """Run a pipeline config; steps already done with the same config are skipped."""
    folder = run_pipeline_file(options, config)
    typer.echo(f"run folder: {folder}")


@options_from("options", DemoOptions)
def demo(options: DemoOptions) -> None:
    """The main job on the default pair: cache, BatchTopK and L1 crosscoders, diffing analysis,
    TuCo, LinEAS and its baselines; then the app on the run folder. Rerun to resume."""
    run_demo(options)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)
