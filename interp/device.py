"""The `auto` device: cuda where this machine has it, else cpu (every command's `--device`
default, and an options dataclass built in Python with `device="auto"`)."""


def resolve_device(device: str) -> str:
    """`auto` -> cuda if available, else cpu; any other name unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
