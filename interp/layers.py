"""The one layer rule and the one naming rule of the project.

`resid_post[l]` is the output of decoder block `l` (0-based), before any final norm. It equals
HF `hidden_states[l + 1]` for every block but the last one: HF applies the final norm to its last
hidden state, we do not.
"""

from collections.abc import Sequence

from interp.errors import InterpError

LayerSpec = int | float | str


def resolve_layer(spec: LayerSpec, n_layers: int) -> int:
    """An int (`3`), a negative int (`-1` = last block) or a fraction of depth (`0.5` = middle
    block, `int(0.5 * n_layers)`); strings of those are parsed, as is `resid_post[3]`."""
    value: int | float
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("resid_post[") and text.endswith("]"):
            text = text[len("resid_post[") : -1]
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise InterpError(
                    f"unknown layer {spec!r}: expected an int, a negative int or a fraction "
                    f"such as 0.5 (model has {n_layers} layers)"
                ) from None
    else:
        value = spec
    if isinstance(value, float) and not value.is_integer():
        if not 0.0 < value < 1.0:
            raise InterpError(f"unknown layer {spec!r}: a fraction must lie in (0, 1)")
        return min(int(value * n_layers), n_layers - 1)
    index = int(value)
    if not -n_layers <= index < n_layers:
        raise InterpError(
            f"unknown layer {spec!r}: model has {n_layers} layers, expected "
            f"{-n_layers}..{n_layers - 1} or a fraction in (0, 1)"
        )
    return index % n_layers


def resolve_layers(specs: Sequence[LayerSpec], n_layers: int) -> list[int]:
    """Resolve each spec; duplicates are an error (they would silently double a source)."""
    layers = [resolve_layer(spec, n_layers) for spec in specs]
    if not layers:
        raise InterpError("no layer given: expected at least one layer")
    if len(set(layers)) != len(layers):
        raise InterpError(f"duplicate layers {list(specs)} resolve to {layers}")
    return layers


def hook_name(layer: int) -> str:
    """The project's name for a residual-stream site, e.g. `resid_post[12]`."""
    return f"resid_post[{layer}]"
