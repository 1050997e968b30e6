"""Model-diffing workbench: models and hooks, activation cache, TuCo, datasets, CLI."""

from interp.errors import InterpError
from interp.models import LoadedModel, ModelPair, load_model, load_pair

__all__ = ["InterpError", "LoadedModel", "ModelPair", "load_model", "load_pair"]
