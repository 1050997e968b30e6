"""Sparse dictionaries (BatchTopK / TopK / L1 crosscoders and SAEs), their trainer, evaluation
and export. Depends on `interp`, never the reverse.

`from crosscoders import CrossCoder` works; torch is imported on first use, so that the CLI's
option declarations (crosscoders.train_options) load without it and `interp --help` stays fast.
"""

from crosscoders.config import CrossCoderConfig, Source, TrainingConfig

__all__ = [
    "CrossCoder",
    "CrossCoderConfig",
    "Source",
    "TrainingConfig",
    "load_crosscoder",
    "save_crosscoder",
]


def __getattr__(name: str):
    if name == "CrossCoder":
        from crosscoders.crosscoder import CrossCoder

        return CrossCoder
    if name in ("load_crosscoder", "save_crosscoder"):
        from crosscoders import io

        return getattr(io, name)
    raise AttributeError(f"module 'crosscoders' has no attribute {name!r}")
