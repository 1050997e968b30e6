"""Checks of command-line values, one per concept, attached to options with `callback=`: typer runs
them while it parses, so a bad value stops a command before it loads a model or writes a file.
Each raises `BadOption` (an `InterpError` naming the option and the value), which `interp.cli.main`
prints as one line (`error: bad --lr -1.0: expected a number > 0`); a pipeline config's values
pass through the same callbacks (interp/cli/pipeline_cmd.py) before its first step runs."""

import os
import tempfile
from pathlib import Path

import typer

from interp.errors import InterpError

DEVICE_TYPES = ("cpu", "cuda", "mps")


class BadOption(InterpError):
    """A value an option's check refused; `param` is the option (a pipeline names its key)."""

    def __init__(self, param: typer.CallbackParam, value: object, reason: str):
        flag = next((opt for opt in param.opts if opt.startswith("--")), param.name)
        shown = str(value) if isinstance(value, Path) else value
        super().__init__(f"bad {flag} {shown!r}: {reason}")
        self.param, self.reason = param, reason


def positive(param: typer.CallbackParam, value: float | None) -> float | None:
    """A count, size or rate that must be > 0 (`None`: an optional left unset)."""
    if value is not None and not value > 0:
        raise BadOption(param, value, "expected a number > 0")
    return value


def non_negative(param: typer.CallbackParam, value: float | None) -> float | None:
    """A count or coefficient where 0 means "none" (warm-up steps, a penalty, 0 = all texts)."""
    if value is not None and not value >= 0:
        raise BadOption(param, value, "expected a number >= 0")
    return value


def port(param: typer.CallbackParam, value: int) -> int:
    if not 1 <= value <= 65535:
        raise BadOption(param, value, "expected a TCP port in 1..65535")
    return value


def _device_problem(value: str) -> str | None:
    """Why `value` is not a device this machine has, or None (torch itself only fails later, with
    an AssertionError deep inside the first `.to(device)`)."""
    import torch

    try:
        device = torch.device(value)
    except RuntimeError:
        return "expected cpu, cuda, cuda:N or mps"
    if device.type not in DEVICE_TYPES:
        return "expected cpu, cuda, cuda:N or mps"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return (
                f"CUDA is not available on this machine (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda or 'none'}): use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA device(s): expected cuda:0..cuda:{count - 1}"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "MPS is not available on this machine: use --device cpu"
    return None


def device(param: typer.CallbackParam, value: str) -> str:
    """cpu, cuda, cuda:N or mps, and only a device this machine has."""
    problem = _device_problem(value)
    if problem:
        raise BadOption(param, value, problem)
    return value


def device_or_auto(param: typer.CallbackParam, value: str) -> str:
    """As `device`, or `auto` (kept as `auto`, for a command that resolves it per worker)."""
    return value if value == "auto" else device(param, value)


def resolved_device(param: typer.CallbackParam, value: str) -> str:
    """As `device_or_auto`, with `auto` resolved: cuda if this machine has it, else cpu."""
    from interp.device import resolve_device

    return device(param, value) if value != "auto" else resolve_device(value)


def mixture(param: typer.CallbackParam, value: str | None) -> str | None:
    """A dataset mixture `recipe:weight,...` (interp.cache.config.parse_mix: weights > 0) whose
    recipes exist (interp.cache.token_stream.check_recipe); `None`: an optional left unset."""
    from interp.cache.config import parse_mix
    from interp.cache.token_stream import check_recipe

    if value is None:
        return value
    try:
        for recipe, _ in parse_mix(value):
            check_recipe(recipe)
    except InterpError as error:
        raise BadOption(param, value, str(error)) from None
    return value


def storage_dtype(param: typer.CallbackParam, value: str | None) -> str | None:
    """A cache storage dtype: bf16, fp16, fp32 (interp.cache.config.canonical_dtype)."""
    from interp.cache.config import canonical_dtype

    if value is None:
        return value
    try:
        canonical_dtype(value)
    except InterpError as error:
        raise BadOption(param, value, str(error)) from None
    return value


def model_dtype(param: typer.CallbackParam, value: str | None) -> str | None:
    """A model dtype in either spelling (bf16 or bfloat16, fp16 / float16 / half, fp32 or
    float32), returned as torch names it: bfloat16, float16, float32; or `auto` (bf16 on CUDA,
    fp32 elsewhere: interp.models.model_dtype). None (an unset stream option) stays None."""
    from interp.cache.config import canonical_dtype

    if value is None:
        return value
    if value.lower() == "auto":
        return "auto"
    try:
        return canonical_dtype(value)
    except InterpError:
        raise BadOption(
            param, value, "expected auto, bf16, fp16 or fp32 (or bfloat16, float16, float32)"
        ) from None


def cache_split(param: typer.CallbackParam, value: str) -> str:
    """A split of an activation cache (interp.cache.reader.SPLITS)."""
    from interp.cache.reader import SPLITS

    if value not in SPLITS:
        raise BadOption(param, value, f"expected one of {', '.join(SPLITS)}")
    return value


def existing_file(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A file a command reads (`None`: an optional left unset)."""
    if value is not None and not value.is_file():
        raise BadOption(param, value, "no such file")
    return value


def output_folder(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A folder a command writes into: a folder (or one that can be created) in which this
    process can create files, or in whose nearest existing parent it can. Probed by creating and
    deleting a file: permission bits do not tell (root, read-only or virtual file systems)."""
    if value is None:
        return value
    if value.exists() and not value.is_dir():
        raise BadOption(param, value, "it is a file: expected a folder")
    existing = value.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise BadOption(param, value, f"{str(existing)!r} is a file: expected a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".interp-write-check-", dir=existing)
    except OSError as error:
        raise BadOption(
            param, value, f"cannot create files in {str(existing)!r} ({error.strerror})"
        ) from None
    os.close(handle)
    os.unlink(probe)
    return value
