"""Steering maps that edit a model's activations: LinEAS and its baselines (mean-difference,
Linear-AcT). Importing the package registers every map type, so `load_map` reads any of them."""

from steering import affine_map, linear_act, mean_difference  # noqa: F401  (register map types)
