"""The messages and exit codes of `interp` (interp/cli/main.py): one line per error."""

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
INTERRUPTED_LINE = "interrupted: rerun the same command to resume"


def one_line(text: str) -> str:
    """The message on one line: its lines joined (a message may quote a multi-line value)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def usage_message(error: BaseException) -> str:
    """typer's message (`Invalid value for '--tokens': ...`, `No such option: --bogus`), with the
    value a type conversion refused and a pointer to the command's help."""
    message = error.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
    cause = error.__cause__
    if hasattr(cause, "errors"):  # typer converts values with pydantic: the refused input
        inputs = [entry.get("input") for entry in cause.errors()]  # type: ignore[union-attr]
        if inputs and isinstance(inputs[0], str) and repr(inputs[0]) not in message:
            message += f" (got {inputs[0]!r})"
    ctx = getattr(error, "ctx", None)
    if ctx is not None:
        message = f"{message.rstrip('.')} (try `{ctx.command_path} --help`)"
    return message
