"""One declaration per user-facing option: a dataclass field with its help line (and the name of
the interp/cli/validators.py check its value must pass). The CLI builds its options from these
fields (interp/cli/options.py), a pipeline table is checked against them, and the Python API
constructs the same dataclass.

    @dataclass
    class TrainOptions:
        dict_size: int = option(help="number of latents F", check="positive")
        k: int = option(100, help="latents per token (topk / batchtopk)", check="positive")
"""

from dataclasses import MISSING, Field, field, fields
from typing import Any

HELP = "help"
CHECK = "check"  # the name of a function of interp/cli/validators.py
FLAGS = "flags"  # the option's spellings when not `--field-name` (e.g. ("--ctx",))
DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps"


def option(
    default: Any = MISSING, *, help: str, check: str | None = None, flags: tuple[str, ...] = ()
) -> Any:
    """A dataclass field that is also a command-line option and a pipeline-table key; no default
    = a required option."""
    metadata = {HELP: help, CHECK: check, FLAGS: flags}
    return field(default=default, metadata=metadata)


def model_dtype_option(*, help_prefix: str = "") -> Any:
    """The `model_dtype` field (`--model-dtype`) of every command that loads models to run them,
    declared here once: `auto` = bf16 on CUDA, fp32 on the CPU (interp.models.model_dtype).
    `help_prefix` marks a group of options, e.g. "stream: "."""
    return option(
        "auto",
        help=f"{help_prefix}dtype the models run in: auto (bf16 on CUDA, fp32 on the CPU), "
        "bf16, fp16, fp32",
        check="model_dtype",
    )


def option_fields(cls: type) -> list[Field]:
    """The fields of `cls` declared with `option` (in declaration order)."""
    return [entry for entry in fields(cls) if HELP in entry.metadata]


def default_of(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls`: an option mirroring a config field takes
    its default from there, so the number is written once."""
    (entry,) = [entry for entry in fields(cls) if entry.name == name]
    assert entry.default is not MISSING, f"{cls.__name__}.{name} has no default"
    return entry.default


def option_help(cls: type, name: str) -> str:
    """The help line of option `name` of dataclass `cls` (a command that takes the value as an
    argument of its own, e.g. the models a pipeline sets, keeps the one wording)."""
    (entry,) = [entry for entry in option_fields(cls) if entry.name == name]
    return entry.metadata[HELP]


def comma_separated(text: str) -> list[str]:
    """An option holding a list as text: `"chat, base"` -> ["chat", "base"] (empty parts
    dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]
