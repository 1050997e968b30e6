"""Where a steering map intervenes: the modules whose outputs it edits.

Sites are HF module names (`model.layers.3.post_feedforward_layernorm`), resolved from a kind and a
list of layers:

- `post-norm` (default of LinEAS and Linear-AcT, as in the reference code): the outputs of the
  normalisations around each block's two branches.
  - Gemma 2/3 (sandwich norms): `post_attention_layernorm` and `post_feedforward_layernorm`, whose
    outputs are exactly what each branch adds to the residual stream, and the skip path of the
    residual stream is left untouched. Their scale is NOT depth-independent: the norms' learned
    gains grow with depth (Gemma 3 270M, base on held-out harmful requests vs chat, mean
    pooling: the W2^2 sum over neurons between the two models is 20 at the first site and
    6.0e7 at the last, 82% of the whole objective; benchmarks/lineas_ablation.py), so a
    parameter step of one size (Adam) means very different moves at different sites.
  - Llama/Qwen 2 (pre-norm only): `input_layernorm` and `post_attention_layernorm`, the normalised
    inputs of attention and MLP (the reference's `layernorm` choice for Llama 3).
- `block`: the block outputs, `resid_post[l]` (the CAA/ActAdd choice).
- `re:<regex>`: every module whose full name matches the regex (any architecture).
"""

import re
from collections.abc import Sequence

from torch import nn

from interp.errors import InterpError
from interp.hooks import decoder_layers
from interp.layers import LayerSpec, resolve_layers

SITE_KINDS = ("post-norm", "block")

# Per architecture, by the attribute that tells the norm layout apart (checked in order).
POST_NORM_LAYOUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("post_feedforward_layernorm", ("post_attention_layernorm", "post_feedforward_layernorm")),
    ("input_layernorm", ("input_layernorm", "post_attention_layernorm")),
)


def _post_norm_attributes(block: nn.Module) -> tuple[str, ...]:
    for marker, attributes in POST_NORM_LAYOUTS:
        if hasattr(block, marker):
            return attributes
    raise InterpError(
        f"no post-norm sites known for blocks of type {type(block).__name__}: use `block` or "
        "`re:<regex>` sites"
    )


def _block_prefix(model: nn.Module, blocks: nn.ModuleList) -> str:
    for name, module in model.named_modules():
        if module is blocks:
            return name
    raise AssertionError("decoder layers are not a submodule of the model")


def resolve_sites(
    model: nn.Module, kind: str = "post-norm", layers: Sequence[LayerSpec] | None = None
) -> list[str]:
    """Module names of the sites, in forward order. `layers` (ints, negative ints, fractions;
    default: every layer) selects blocks for `post-norm` and `block`; `re:` ignores it."""
    if kind.startswith("re:"):
        pattern = re.compile(kind[3:])
        names = [name for name, _ in model.named_modules() if name and pattern.fullmatch(name)]
        if not names:
            raise InterpError(f"site pattern {kind!r} matches no module of the model")
        return names
    if kind not in SITE_KINDS:
        raise InterpError(f"unknown site kind {kind!r}: expected one of {SITE_KINDS} or re:<regex>")
    blocks = decoder_layers(model)
    chosen = sorted(resolve_layers(list(layers), len(blocks))) if layers else range(len(blocks))
    prefix = _block_prefix(model, blocks)
    if kind == "block":
        return [f"{prefix}.{layer}" for layer in chosen]
    attributes = _post_norm_attributes(blocks[0])
    return [f"{prefix}.{layer}.{attribute}" for layer in chosen for attribute in attributes]


def site_modules(model: nn.Module, sites: Sequence[str]) -> list[nn.Module]:
    """The modules named by `sites`; a name the model lacks is a user error."""
    modules = []
    for name in sites:
        try:
            modules.append(model.get_submodule(name))
        except AttributeError:
            raise InterpError(
                f"site {name!r} is not a module of this {type(model).__name__}: the map was made "
                "for another architecture"
            ) from None
    return modules
