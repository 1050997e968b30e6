"""Steering maps that edit a model's activations: LinEAS and its baselines (mean-difference,
Linear-AcT, TuCo alpha-scaling, crosscoder latent steering, logit amplification). Importing the
package registers every map type, so `load_map` reads any of them."""

from steering import (  # noqa: F401  (register map types)
    affine_map,
    latent_steering,
    linear_act,
    logit_amplification,
    mean_difference,
    tuco_scaling,
)
