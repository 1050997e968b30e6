import pytest

from interp.errors import InterpError
from interp.layers import hook_name, resolve_layer, resolve_layers


@pytest.mark.parametrize(
    "spec,expected",
    [
        (0, 0),
        (3, 3),
        (-1, 17),
        (-18, 0),
        (0.5, 9),
        ("0.5", 9),
        ("-2", 16),
        ("resid_post[4]", 4),
        (0.99, 17),
    ],
)
def test_resolve_layer_rules(spec, expected):
    assert resolve_layer(spec, 18) == expected


@pytest.mark.parametrize("spec", [18, -19, 1.5, "middle", "resid_post[x]"])
def test_unknown_layer_is_a_clear_error(spec):
    with pytest.raises(InterpError, match="unknown layer"):
        resolve_layer(spec, 18)


def test_duplicate_layers_are_refused():
    with pytest.raises(InterpError, match="duplicate"):
        resolve_layers([9, 0.5], 18)


def test_hook_name():
    assert hook_name(12) == "resid_post[12]"
