"""Typer options built from an options dataclass (interp/options.py): a command declares
`training: TrainOptions` and `@options_from("training", TrainOptions)` turns each field of
TrainOptions into an option (its type, default, help line and check), parses them, and calls the
command with the dataclass built from them. The option is declared once, in the dataclass."""

import functools
import inspect
from collections.abc import Callable
from dataclasses import MISSING
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from interp.cli import validators
from interp.options import CHECK, FLAGS, HELP, option_fields

Command = TypeVar("Command", bound=Callable[..., Any])

DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps"
# `--device`: every command that loads a model or a dictionary takes it, with `auto` the default
DeviceOption = Annotated[
    str, typer.Option("--device", callback=validators.resolved_device, help=DEVICE_HELP)
]


def option_parameters(cls: type, *, unset_is_none: bool = False) -> list[inspect.Parameter]:
    """One keyword parameter with a `typer.Option` per option field of `cls`. `unset_is_none`:
    every option defaults to None (the command tells "not given" from the dataclass default,
    which the help line then names)."""
    hints = get_type_hints(cls)
    parameters = []
    for entry in option_fields(cls):
        annotation, default, help_line = hints[entry.name], entry.default, entry.metadata[HELP]
        if default is MISSING:
            default = ...
        if unset_is_none:
            if default not in (..., None):
                help_line = f"{help_line} (default {default})"
            annotation, default = annotation | None, None
        check = entry.metadata[CHECK]
        info = typer.Option(
            default,
            *entry.metadata[FLAGS],
            callback=getattr(validators, check) if check else None,
            help=help_line,
        )
        parameters.append(
            inspect.Parameter(
                entry.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation
            )
        )
    return parameters


def options_from(
    name: str, cls: type, *, unset_is_none: bool = False
) -> Callable[[Command], Command]:
    """Replace the command's parameter `name` by the options of dataclass `cls`; the command
    receives `cls(**values)`, or with `unset_is_none` a dict of the options given (not None)."""

    def decorate(command: Command) -> Command:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != name]
        generated = option_parameters(cls, unset_is_none=unset_is_none)
        clash = {p.name for p in own} & {p.name for p in generated}
        assert not clash, f"{command.__name__}: {sorted(clash)} declared twice"
        option_names = [p.name for p in generated]

        @functools.wraps(command)
        def with_options(**values: Any) -> Any:
            given = {key: values.pop(key) for key in option_names}
            if unset_is_none:
                group: Any = {key: value for key, value in given.items() if value is not None}
            else:
                group = cls(**given)
            return command(**values, **{name: group})

        parameters = sorted(own + generated, key=lambda p: p.kind)
        with_options.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        with_options.__annotations__ = {
            p.name: p.annotation for p in parameters if p.annotation is not p.empty
        }
        del with_options.__wrapped__  # typer reads the signature above, not the command's
        return with_options  # type: ignore[return-value]

    return decorate
