"""Sparse dictionaries (BatchTopK / TopK / L1 crosscoders and SAEs), their trainer, evaluation
and export. Depends on `interp`, never the reverse."""

from crosscoders.config import CrossCoderConfig, Source, TrainingConfig
from crosscoders.crosscoder import CrossCoder
from crosscoders.io import load_crosscoder, save_crosscoder

__all__ = [
    "CrossCoder",
    "CrossCoderConfig",
    "Source",
    "TrainingConfig",
    "load_crosscoder",
    "save_crosscoder",
]
