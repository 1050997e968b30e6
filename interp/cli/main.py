"""Entry point of `interp`. Each area registers its sub-commands here; user errors
(`InterpError`) print one line on stderr and exit 2, with no traceback."""

import sys

import typer

from interp.cli import (
    analyze_cmd,
    app_cmd,
    cache_cmd,
    data_cmd,
    diffing_cmd,
    models_cmd,
    organism_cmd,
    pipeline_cmd,
    steer_cmd,
    train_cmd,
    tuco_cmd,
)
from interp.errors import InterpError

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


def main() -> None:
    try:
        app(standalone_mode=False)
    except InterpError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except (typer.Exit, SystemExit) as stop:
        sys.exit(getattr(stop, "exit_code", getattr(stop, "code", 0)))
    except Exception as error:  # click usage errors
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
