"""Hooked access to a loaded model.

- `residual_stream`: the hot path. Reads `resid_post[l]` for a batch of token ids with plain
  PyTorch forward hooks and stops the forward pass right after the deepest requested block.
- `nnsight_model`: an nnsight wrapper of the same HF model (no copy, no mutation) for reading and
  editing the residual stream during forward passes and `generate`, with gradients.
- `transformer_lens_bridge`: a TransformerLens 4 bridge booted on its *own* copy of the model,
  because booting rewrites the HF module tree.
"""

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.models import LoadedModel


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of an HF causal LM (Llama, Gemma 2/3, Qwen 2, ...)."""
    return model.get_decoder().layers


def block_output(output: Tensor | tuple) -> Tensor:
    """Decoder blocks return a tensor (transformers 5) or a tuple whose first item is one."""
    return output[0] if isinstance(output, tuple) else output


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block to skip the rest of the model."""


@torch.no_grad()
def residual_stream(
    model: nn.Module,
    input_ids: Int[Tensor, "batch seq"],
    layers: Sequence[int],
    attention_mask: Int[Tensor, "batch seq"] | None = None,
) -> Float[Tensor, "batch seq n_layers d_model"]:
    """`resid_post[l]` for each l in `layers` (in that order), running the blocks only up to
    max(layers): deeper blocks, the final norm and the unembedding are never computed."""
    blocks = decoder_layers(model)
    deepest = max(layers)
    captured: dict[int, Tensor] = {}

    def capture(layer: int):
        def hook(_module: nn.Module, _args: tuple, output: Tensor | tuple) -> None:
            captured[layer] = block_output(output)
            if layer == deepest:
                raise _StopForward

        return hook

    handles = [blocks[layer].register_forward_hook(capture(layer)) for layer in set(layers)]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([captured[layer] for layer in layers], dim=2)


def nnsight_model(loaded: LoadedModel):
    """An nnsight `LanguageModel` around the already-loaded HF model (offline, shares weights)."""
    from nnsight import LanguageModel

    return LanguageModel(loaded.model, tokenizer=loaded.tokenizer)


def transformer_lens_bridge(loaded: LoadedModel):
    """A TransformerLens `TransformerBridge` on a fresh copy of `loaded.model`."""
    import copy

    from transformer_lens.model_bridge import TransformerBridge

    own_copy = copy.deepcopy(loaded.model)
    # The bridge picks its adapter from `config.architectures`, which models built from a config
    # (rather than loaded from a folder) leave empty.
    own_copy.config.architectures = [type(own_copy).__name__]
    return TransformerBridge.boot_transformers(
        str(loaded.model.config.name_or_path or loaded.spec),
        hf_model=own_copy,
        tokenizer=loaded.tokenizer,
        dtype=next(own_copy.parameters()).dtype,
    )
