"""`interp run CONFIG` (any subset of a pipeline's steps) and `interp demo` (the main job on the
default pair: a built-in pipeline profile, then the app on its run folder)."""

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from interp.cli import validators as check
from interp.cli.messages import INTERRUPTED, usage_message
from interp.cli.validators import BadOption
from interp.errors import InterpError
from interp.pipeline import PROFILES_DIR, Step, load_config, plan, run_pipeline, select

if TYPE_CHECKING:
    from typer._click.core import Command, Parameter


def invoke_interp(root: "Command", argv: Sequence[str]) -> None:
    """Run one `interp` command (`root` is the `interp` command itself, interp.cli.main's
    root_command) in this process; a non-zero exit becomes an InterpError, Ctrl-C (which typer
    turns into exit code 130) stops the whole pipeline as Ctrl-C."""
    import sys

    # a command that relaunches itself (`--workers N` -> torchrun) reads its argv from sys.argv
    saved, sys.argv = sys.argv, ["interp", *argv]
    try:
        code = root.main(list(argv), prog_name="interp", standalone_mode=False)
    finally:
        sys.argv = saved
    if code == INTERRUPTED:
        raise KeyboardInterrupt
    if isinstance(code, int) and code != 0:
        raise InterpError(f"step `interp {' '.join(argv)}` exited with code {code}")


def option_keys(param: "Parameter | None") -> list[str]:
    """The config keys of an option: `--dict-size` -> `dict_size` (the inverse of
    interp.pipeline.options_to_argv); none for an argument."""
    if param is None or param.param_type_name != "option":
        return []
    return [flag[2:].replace("-", "_") for flag in param.opts if flag.startswith("--")]


def _step_command(root: "Command", step: Step) -> tuple["Command", list[str], str]:
    """The command a step runs (walking `train` -> `crosscoder`), the arguments left for it and
    its name (`interp train crosscoder`)."""
    command, args, path = root, list(step.argv), ["interp"]
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        if args[0] not in command.commands:
            expected = ", ".join(sorted(command.commands))
            if step.table.startswith("train."):  # `kind` chose the sub-command
                raise InterpError(f"[{step.table}] kind = {args[0]!r}: expected one of {expected}")
            raise InterpError(
                f"no command `{' '.join(path)} {args[0]}`: expected one of {expected}"
            )
        path.append(args[0])
        command = command.commands[args.pop(0)]
    return command, args, " ".join(path)


def _value_problem(param: "Parameter", value: object) -> str | None:
    """What options_to_argv cannot turn into this option's argv: a flag takes true or false, only
    a repeatable option takes a list."""
    is_flag = getattr(param, "is_flag", False)
    if is_flag and not isinstance(value, bool):
        return "expected true or false"
    if not is_flag and isinstance(value, bool):
        return "expected a value, not true/false"
    if isinstance(value, list) and not param.multiple:
        return "expected one value, not a list"
    if isinstance(value, dict):
        return "expected a value, not a table"
    return None


def check_steps(
    root: "Command", steps: Sequence[Step], selected: Sequence[Step], source: str
) -> None:
    """Before the first step runs: every table key is an option of its step's command, with a
    value of the right shape, and each selected step's argv parses as that command parses it
    (value types and the checks of interp/cli/validators.py: ranges, device, folders...)."""
    for step in steps:
        try:
            command, args, name = _step_command(root, step)
        except InterpError as error:
            raise InterpError(f"{source}: {error}") from None
        known = {key: param for param in command.params for key in option_keys(param)}
        allowed = sorted(key for key in known if key not in step.fixed and key != "help")
        for key, value in step.options:
            if key not in allowed:
                raise InterpError(
                    f"{source}: [{step.table}] has no option {key!r} (`{name}`): expected one "
                    f"of {', '.join(allowed)}"
                )
            problem = _value_problem(known[key], value)
            if problem:
                raise InterpError(f"{source}: [{step.table}] {key} = {value!r}: {problem}")
        if step not in selected:
            continue
        try:
            command.make_context(name, args)
        except (InterpError, typer.TyperException) as error:
            raise InterpError(f"{source}: {_parse_problem(step, error)}") from None


def _parse_problem(step: Step, error: BaseException) -> str:
    """`[train.l1] lr = -1.0: expected a number > 0` when the value is the table's, else the
    table and the whole message (a folder the pipeline chose, a check across options)."""
    options = dict(step.options)
    keys = [key for key in option_keys(getattr(error, "param", None)) if key in options]
    if keys:
        reason = error.reason if isinstance(error, BadOption) else getattr(error, "message", "")
        return f"[{step.table}] {keys[0]} = {options[keys[0]]!r}: {reason}"
    message = str(error) if isinstance(error, InterpError) else usage_message(error)
    return f"[{step.table}] (`interp {' '.join(step.argv)}`): {message}"


def _run(root: "Command", config_path: Path, out: Path | None, steps: str | None) -> Path:
    config = load_config(config_path)
    if out is not None:
        config["run"]["out"] = str(out)
    only = [name.strip() for name in steps.split(",") if name.strip()] if steps else None
    try:
        planned = plan(config)
    except InterpError as error:
        raise InterpError(f"{config_path}: {error}") from None
    check_steps(root, planned, select(planned, only), str(config_path))
    run_pipeline(config, partial(invoke_interp, root), only=only, echo=typer.echo)
    return Path(config["run"]["out"])


def run(
    ctx: typer.Context,
    config: Annotated[
        Path, typer.Argument(help="pipeline config (TOML), e.g. data/pipelines/quick.toml")
    ],
    out: Annotated[
        Path | None,
        typer.Option(callback=check.output_folder, help="run folder (overrides [run] out)"),
    ] = None,
    steps: str = typer.Option(None, help="comma-separated steps, e.g. cache,train or train.l1"),
) -> None:
    """Run a pipeline config; steps already done with the same config are skipped."""
    folder = _run(ctx.find_root().command, config, out, steps)
    typer.echo(f"run folder: {folder}")


def demo(
    ctx: typer.Context,
    full: bool = typer.Option(
        False,
        "--full/--quick",
        help="quick: <= 20 min on a 2-core CPU; full: the paper-scale profile, meant for a GPU",
    ),
    out: Annotated[
        Path | None, typer.Option(callback=check.output_folder, help="run folder")
    ] = None,
    no_app: bool = typer.Option(False, "--no-app", help="do not start the app at the end"),
    port: int = typer.Option(8501, callback=check.port, help="port of the app"),
) -> None:
    """The main job on the default pair: cache, BatchTopK and L1 crosscoders, diffing analysis,
    TuCo, LinEAS and its baselines; then the app on the run folder. Rerun to resume."""
    profile = PROFILES_DIR / ("full.toml" if full else "quick.toml")
    folder = _run(ctx.find_root().command, profile, out, None)
    typer.echo(f"run folder: {folder}")
    if not no_app:
        from interp.cli.app_cmd import app as start_app

        start_app(folder, port=port, host="127.0.0.1")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)
