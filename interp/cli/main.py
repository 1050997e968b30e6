"""Entry point of `interp`. Each area registers its sub-commands here.

The exit code is the outcome: 0 done, the command's own code when it exits with one (`cache
verify` on a damaged cache, a failed `--workers N` run), 2 for a user error and 130 for Ctrl-C.
A user error (an `InterpError`, or a usage error of typer's parser: unknown command or option,
missing option or argument, a value of the wrong type, a value a check of interp/cli/validators.py
refuses) prints exactly one line on stderr, `error: ...`, with no traceback; Ctrl-C prints
`interrupted: rerun the same command to resume`. Library warnings and progress bars are silenced
so that nothing prints before that line.
"""

import os
import sys
import warnings
from collections.abc import Sequence

import typer
from typer._click.exceptions import NoArgsIsHelpError

from interp.cli import (
    analyze_cmd,
    app_cmd,
    cache_cmd,
    data_cmd,
    diffing_cmd,
    models_cmd,
    organism_cmd,
    outputs_cmd,
    pipeline_cmd,
    steer_cmd,
    train_cmd,
    tuco_cmd,
)
from interp.cli.messages import (
    INTERRUPTED,
    INTERRUPTED_LINE,
    USAGE_ERROR,
    one_line,
    usage_message,
)
from interp.errors import InterpError

OUR_PACKAGES = ("interp", "crosscoders", "steering", "app")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_cmd.register(app)
analyze_cmd.register(app)
app_cmd.register(app)
cache_cmd.register(app)
data_cmd.register(app)
tuco_cmd.register(app)
organism_cmd.register(app)
pipeline_cmd.register(app)
steer_cmd.register(app)
train_cmd.register(app)
diffing_cmd.register(app)
outputs_cmd.register(app)


def _click_errors() -> tuple[type[BaseException], ...]:
    """typer 0.29 parses with its own copy of click (`typer._click`), whose exceptions derive
    from `typer.TyperException`, not `click.ClickException`; a stand-alone click, where one is
    installed, is caught too (a library calling it)."""
    errors: tuple[type[BaseException], ...] = (typer.TyperException,)
    try:
        import click
    except ImportError:
        return errors
    return (*errors, click.ClickException)


def _interrupts() -> tuple[type[BaseException], ...]:
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt, typer.Abort)
    try:
        import click
    except ImportError:
        return interrupts
    return (*interrupts, click.Abort)


def quiet_libraries() -> None:
    """Library warnings and progress bars off, so that an error is the only line on stderr (the
    "Loading weights" bar of transformers printed before every error of `interp cache`). Set
    PYTHONWARNINGS (or -W), HF_HUB_DISABLE_PROGRESS_BARS=0 or TRANSFORMERS_VERBOSITY to see
    them again."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers loads
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not sys.warnoptions:
        ours = "|".join(OUR_PACKAGES)
        warnings.filterwarnings("ignore", module=rf"(?!({ours})(\.|$))")
        # meant for developers, and often attributed to the caller (our module) by stacklevel
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)


def run(argv: Sequence[str] | None = None) -> int:
    """Run one `interp` command line; returns its exit code (see the module docstring)."""
    try:
        code = app(list(sys.argv[1:] if argv is None else argv), standalone_mode=False)
    except InterpError as error:
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return USAGE_ERROR
    except NoArgsIsHelpError as error:  # `interp train`: the group's help, exit 2 as in click
        help_text = error.format_message()  # empty where rich printed it already
        if help_text.strip():
            print(help_text)
        return USAGE_ERROR
    except _interrupts():
        print(INTERRUPTED_LINE, file=sys.stderr)
        return INTERRUPTED
    except _click_errors() as error:
        print(f"error: {one_line(usage_message(error))}", file=sys.stderr)
        return USAGE_ERROR
    except PermissionError as error:  # e.g. a folder made read-only after the checks ran
        where = f": {str(error.filename)!r}" if error.filename else ""
        print(f"error: permission denied{where}", file=sys.stderr)
        return USAGE_ERROR
    if code == INTERRUPTED:  # typer turns a KeyboardInterrupt into Exit(130) and returns it
        print(INTERRUPTED_LINE, file=sys.stderr)
    return code if isinstance(code, int) else 0


def main() -> int:
    """The console script `interp` (which exits with the returned code)."""
    quiet_libraries()
    return run()


if __name__ == "__main__":
    sys.exit(main())
