"""Model-diffing workbench: models and hooks, activation cache, TuCo, datasets, CLI.

`from interp import load_pair` works; the heavy imports (torch, transformers) happen on first use,
so that `interp --help` and user-error paths stay fast.
"""

from interp.errors import InterpError

__all__ = ["InterpError", "LoadedModel", "ModelPair", "load_model", "load_pair"]


def __getattr__(name: str):
    if name in __all__:
        from interp import models

        return getattr(models, name)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
