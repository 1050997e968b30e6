"""Typer options built from an options dataclass (interp/options.py): a command declares
`training: TrainOptions` and `@options_from("training", TrainOptions)` turns each field of
TrainOptions into an option (its type, default, help line and check), parses them, and calls the
command with the dataclass built from them. The option is declared once, in the dataclass."""

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import MISSING
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

import typer

from interp.cli import validators
from interp.errors import InterpError
from interp.options import CHECK, DEVICE_HELP, FLAGS, HELP, option_fields

Command = TypeVar("Command", bound=Callable[..., Any])
# a pipeline table's keys that were renamed, by their old name: a table that still says `dtype`
# for the models' dtype (the adl, change-profile, horizon, amplify and tuco tables before issue 18)
RENAMED_KEYS = {"dtype": "model_dtype"}

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


class _TableKey:
    """Stands in for the typer parameter a check of interp/cli/validators.py names: a pipeline
    table's key (BadOption reads `opts` and `name`)."""

    def __init__(self, key: str):
        self.name, self.opts = key, ["--" + key.replace("_", "-")]


def _typed_value(annotation: Any, value: Any) -> Any:
    """`value` (as TOML gave it) as a value of the field's type, or ValueError with the reason:
    numbers and strings as the command line would take them (a number for a text option, an
    integer for a float option), a flag only true or false, a list only for a list option."""
    options = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) in (Union, UnionType):
        (annotation,) = options  # `X | None`: TOML has no null, so the value is an X
    if get_origin(annotation) is list:
        if not isinstance(value, list):
            raise ValueError("expected a list, e.g. [0.5, 1.0]")
        (item,) = get_args(annotation)
        return [_typed_value(item, entry) for entry in value]
    if isinstance(value, list | dict):
        raise ValueError(
            f"expected one value, not a {'list' if isinstance(value, list) else 'table'}"
        )
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if isinstance(value, bool):
        raise ValueError("expected a value, not true/false")
    if annotation is int:
        if not isinstance(value, int):
            raise ValueError("expected a valid integer")
        return value
    if annotation is float:
        if not isinstance(value, int | float):
            raise ValueError("expected a valid number")
        return float(value)
    if annotation is Path:
        if not isinstance(value, str):
            raise ValueError("expected a path (a string)")
        return Path(value)
    if not isinstance(value, str | int | float):
        raise ValueError("expected a string")
    return str(value)


def options_from_table(
    classes: Sequence[type], table: dict[str, Any], where: str, *, run_checks: bool = True
) -> list[Any]:
    """The options dataclasses `classes` built from a pipeline table (`where` names it, e.g.
    `quick.toml: [train.l1]`): every key an option of one of them, each value of its field's
    type and (with `run_checks`) passing the field's check, as on the command line. Any problem
    is one InterpError naming the table and the key."""
    fields_of = {entry.name: cls for cls in classes for entry in option_fields(cls)}
    assert len(fields_of) == sum(len(option_fields(cls)) for cls in classes), "option twice"
    for key in table:
        if key not in fields_of:
            renamed = RENAMED_KEYS.get(key)
            if renamed in fields_of:
                raise InterpError(f"{where} has no option {key!r}: it is now {renamed!r}")
            expected = ", ".join(sorted(fields_of))
            raise InterpError(f"{where} has no option {key!r}: expected one of {expected}")
    values: dict[type, dict[str, Any]] = {cls: {} for cls in classes}
    for cls in classes:
        hints = get_type_hints(cls)
        for entry in option_fields(cls):
            if entry.name not in table:
                if entry.default is MISSING:
                    raise InterpError(f"{where} needs {entry.name!r}: {entry.metadata[HELP]}")
                continue
            value = table[entry.name]
            try:
                typed = _typed_value(hints[entry.name], value)
            except ValueError as error:
                raise InterpError(f"{where} {entry.name} = {value!r}: {error}") from None
            check = entry.metadata[CHECK]
            if run_checks and check:
                try:
                    typed = getattr(validators, check)(_TableKey(entry.name), typed)
                except validators.BadOption as error:
                    raise InterpError(f"{where} {entry.name} = {value!r}: {error.reason}") from None
            values[cls][entry.name] = typed
    return [cls(**values[cls]) for cls in classes]
