"""Steering maps that edit a model's activations: LinEAS and its baselines (mean-difference,
Linear-AcT, TuCo alpha-scaling, crosscoder latent steering, logit amplification).

Importing the package imports no torch (steering.options declares the CLI's options);
`register_map_types()` imports every map module, so that `steering_map.load_map` (which calls
it) reads any of them."""


def register_map_types() -> None:
    """Import every map module: each registers its type with steering_map.register_map."""
    from steering import (  # noqa: F401
        affine_map,
        latent_steering,
        linear_act,
        logit_amplification,
        mean_difference,
        tuco_scaling,
    )
