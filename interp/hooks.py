"""Hooked access to a loaded model: read and edit the residual stream.

Naming: `resid_post[l]` is the output of decoder block `l` (see `interp.layers`). It equals HF
`hidden_states[l + 1]` for every block but the last: HF applies the final norm to its last hidden
state, the hooks here never do (`final_norm(resid_post[-1]) == hidden_states[-1]`).

Three engines, one per job:

- `residual_stream`: the hot path (activation caching). Plain PyTorch forward hooks on the HF
  model; the forward pass stops right after the deepest requested block, so deeper blocks, the
  final norm and the unembedding are never computed. The writer side: `output_editing_hook(edit)`
  replaces a block's output h by edit(h) whether the block returns a tensor or a tuple
  (`with_block_output`), and `residual_edit(model, layer, edit)` installs it for a `with` block;
  every plain hook that rewrites a block's output goes through them.
- nnsight (`nnsight_model`, `nnsight_forward`, `nnsight_generate`): reading *and editing* the
  residual stream at any layers during a forward pass (with gradients into the edit's parameters,
  as LinEAS needs) and during `generate` with the KV cache. It wraps the loaded HF model itself
  (no copy, no mutation). nnsight compiles the source of its `with` blocks, so traces live in
  this file, never in code typed on stdin.
- TransformerLens 4 (`transformer_lens_bridge`): TL-style analysis (`run_with_cache`, named hooks
  such as `blocks.{l}.hook_resid_post`, `stop_at_layer`, attention patterns) on its *own* copy of
  the model, because booting rewrites the HF module tree.

Plain generation (HF `generate`, hooks installed as above) is `interp.generation.complete`, with
its one stop rule; `nnsight_generate` serves generation with nnsight reads and edits. The
bridge's KV-cached `generate` under transformers 5 is wrong (the per-layer cache reaches the
blocks as `cache=`; greedy tokens diverge from HF's right after the first cached step): the
bridge returned here refuses `use_past_kv_cache=True` with an InterpError;
`use_past_kv_cache=False` matches HF but reruns the whole prefix at every step.

Padding: the helpers take `attention_mask`; nnsight left-pads and supplies position ids on its
own, so batches of different lengths should be left-padded for `nnsight_generate`.
"""

import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.errors import InterpError
from interp.models import LoadedModel

Edit = Callable[[Float[Tensor, "batch seq d_model"]], Float[Tensor, "batch seq d_model"]]
"""An edit of `resid_post[l]`: takes the block's output and returns its replacement (same shape).
It may close over `nn.Parameter`s: gradients reach them through `nnsight_forward`."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of an HF causal LM (Llama, Gemma 2/3, Qwen 2, ...)."""
    return model.get_decoder().layers


def block_output(output: Tensor | tuple) -> Tensor:
    """Decoder blocks return a tensor (transformers 5) or a tuple whose first item is one."""
    return output[0] if isinstance(output, tuple) else output


def with_block_output(output: Tensor | tuple, hidden: Tensor) -> Tensor | tuple:
    """`output` with its hidden state replaced by `hidden`, in the form the block returned."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


OutputHook = Callable[[nn.Module, tuple, Tensor | tuple], Tensor | tuple]


def output_editing_hook(edit: Edit) -> OutputHook:
    """A forward hook that replaces a module's output h by edit(h) (the writer side of
    `block_output`)."""

    def hook(_module: nn.Module, _args: tuple, output: Tensor | tuple) -> Tensor | tuple:
        return with_block_output(output, edit(block_output(output)))

    return hook


@contextmanager
def residual_edit(model: nn.Module, layer: int, edit: Edit) -> Iterator[None]:
    """Replace `resid_post[layer]` by edit(resid_post[layer]) in every forward pass (generation
    included) while the context is open; the blocks after it run on the edited stream."""
    handle = decoder_layers(model)[layer].register_forward_hook(output_editing_hook(edit))
    try:
        yield
    finally:
        handle.remove()


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


# ------------------------------------------------------------------------------------- nnsight


def tokenizer_copy(tokenizer):
    """A copy whose settings (padding side, special tokens, init kwargs) change independently of
    the original's; it shares the Rust backend, which a deep copy would re-serialise (~2-10 s for
    Gemma's 262k vocabulary)."""
    clone = copy.copy(tokenizer)
    for name, value in vars(tokenizer).items():
        if isinstance(value, dict | list | set):
            setattr(clone, name, copy.copy(value))
    return clone


def nnsight_model(loaded: LoadedModel):
    """An nnsight `TransformersModel` around the already-loaded HF model (offline, shares the
    weights). It gets its own copy of the tokenizer: nnsight sets left padding on the tokenizer
    it is given, which must not leak into the rest of the program."""
    from nnsight import TransformersModel

    return TransformersModel(
        loaded.model, tokenizer=tokenizer_copy(loaded.tokenizer), task="text-generation"
    )


def _layer_envoys(lm) -> Any:
    """The nnsight envoy of the decoder's block list (`lm.model.layers` for Llama-likes)."""
    blocks = decoder_layers(lm._module)
    path = next(name for name, module in lm._module.named_modules() if module is blocks)
    envoy = lm
    for part in path.split("."):
        envoy = getattr(envoy, part)
    return envoy


def _sites(
    n_layers: int, read_layers: Sequence[int], edits: Mapping[int, Edit]
) -> list[tuple[int, Edit | None, bool]]:
    """(layer, edit, read?) in execution order: nnsight requires a trace to touch modules in
    the order the model runs them."""
    for layer in [*read_layers, *edits]:
        if not 0 <= layer < n_layers:
            raise InterpError(f"layer {layer} out of range: the model has {n_layers} blocks")
    if len(set(read_layers)) != len(read_layers):
        raise InterpError(f"duplicate read layers {list(read_layers)}")
    layers = sorted(set(read_layers) | set(edits))
    return [(layer, edits.get(layer), layer in read_layers) for layer in layers]


@dataclass
class TraceResult:
    """What `nnsight_forward` returns; both keep the autograd graph unless run under no_grad."""

    logits: Float[Tensor, "batch seq vocab"]
    resid: Float[Tensor, "batch seq n_read d_model"] | None  # read_layers order, after edits


def nnsight_forward(
    lm,
    input_ids: Int[Tensor, "batch seq"],
    read_layers: Sequence[int] = (),
    edits: Mapping[int, Edit] | None = None,
    attention_mask: Int[Tensor, "batch seq"] | None = None,
) -> TraceResult:
    """One forward pass through nnsight: apply `edits[l]` to `resid_post[l]`, read
    `resid_post[l]` for l in `read_layers` (the edited value where both apply), return the logits.

    Not wrapped in no_grad: a loss on the result backpropagates into whatever parameters the
    edits close over (steering maps such as LinEAS train this way)."""
    edits = dict(edits or {})
    blocks = _layer_envoys(lm)
    sites = _sites(len(decoder_layers(lm._module)), read_layers, edits)
    inputs = {"input_ids": input_ids}
    if attention_mask is not None:
        inputs["attention_mask"] = attention_mask
    with lm.trace(**inputs):
        read = dict().save()
        for layer, edit, is_read in sites:
            if edit is not None:
                blocks[layer].output = edit(blocks[layer].output)
            if is_read:
                read[layer] = blocks[layer].output
        logits = lm.output.logits.save()
    resid = torch.stack([read[layer] for layer in read_layers], dim=2) if read_layers else None
    return TraceResult(logits=logits, resid=resid)


@dataclass
class GenerationResult:
    """What `nnsight_generate` returns."""

    token_ids: Int[Tensor, "batch total"]  # prompt + completion
    # resid_post at every position the model ran on (all but the last token), after edits
    resid: Float[Tensor, "batch total_minus_1 n_read d_model"] | None


# The open `tracer.all()` loop of a generation ends, by nnsight's design, with a warning that
# its next step was never reached; that is the normal end of every generation here.
_OPEN_LOOP_END = r".*was never reached: the loop asked for a step"


@torch.no_grad()
def nnsight_generate(
    lm,
    input_ids: Int[Tensor, "batch seq"],
    max_new_tokens: int,
    edits: Mapping[int, Edit] | None = None,
    read_layers: Sequence[int] = (),
    attention_mask: Int[Tensor, "batch seq"] | None = None,
    **generate_kwargs: Any,
) -> GenerationResult:
    """HF `generate` (greedy unless `do_sample=True` is passed; KV cache on) with `edits[l]`
    applied to `resid_post[l]` at every step, i.e. to every position: the prompt at the first
    step, then each new token. Reads `resid_post[l]` for l in `read_layers` along the way."""
    edits = dict(edits or {})
    blocks = _layer_envoys(lm)
    sites = _sites(len(decoder_layers(lm._module)), read_layers, edits)
    generate_kwargs.setdefault("do_sample", False)
    inputs = {"input_ids": input_ids}
    if attention_mask is not None:
        inputs["attention_mask"] = attention_mask
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_OPEN_LOOP_END)
        with lm.generate(max_new_tokens=max_new_tokens, **generate_kwargs) as tracer:
            with tracer.invoke(**inputs):
                steps = list().save()
                # A loop body that touches no module would never yield to the model: no loop.
                for _step in tracer.all() if sites else ():
                    read = {}
                    for layer, edit, is_read in sites:
                        if edit is not None:
                            blocks[layer].output = edit(blocks[layer].output)
                        if is_read:
                            read[layer] = blocks[layer].output
                    steps.append(read)
            # Statements after an open `tracer.all()` loop never run: read the result in its
            # own invoke.
            with tracer.invoke():
                token_ids = tracer.result.save()
    resid = None
    if read_layers:
        # Step 0 covers the prompt; each later step adds one position (with the KV cache the
        # step runs on that position only; without it, it is the last of a full re-run).
        per_step = [steps[0]] + [{k: v[:, -1:] for k, v in step.items()} for step in steps[1:]]
        resid = torch.stack(
            [torch.cat([step[layer] for step in per_step], dim=1) for layer in read_layers], dim=2
        )
    return GenerationResult(token_ids=token_ids, resid=resid)


# --------------------------------------------------------------------------- TransformerLens


def transformer_lens_hook_name(layer: int) -> str:
    """TransformerLens' name for `resid_post[layer]`."""
    return f"blocks.{layer}.hook_resid_post"


def _refuse_cached_generation(generate: Callable) -> Callable:
    def guarded(*args: Any, use_past_kv_cache: bool = True, **kwargs: Any):
        if use_past_kv_cache:
            raise InterpError(
                "TransformerLens bridge generation with the KV cache is wrong under "
                "transformers 5: generate with interp.hooks.nnsight_generate (or pass "
                "use_past_kv_cache=False, correct but quadratic)"
            )
        return generate(*args, use_past_kv_cache=False, **kwargs)

    return guarded


def transformer_lens_bridge(loaded: LoadedModel):
    """A TransformerLens `TransformerBridge` on a fresh copy of `loaded.model` (booting rewrites
    the module tree), offline: config, weights and tokenizer all come from `loaded`."""
    from transformer_lens.model_bridge import TransformerBridge

    own_copy = copy.deepcopy(loaded.model)
    # The bridge picks its adapter from `config.architectures`, which models built from a config
    # (rather than loaded from a folder) leave empty.
    own_copy.config.architectures = [type(own_copy).__name__]
    # TL rebuilds the tokenizer from `init_kwargs["name_or_path"]` with add_bos_token=True unless
    # the tokenizer says it already adds BOS: that reload needs files on disk (in-memory
    # tokenizers have none, hence a KeyError on 'name_or_path') and may yield a different
    # tokenizer. Declaring it BOS-adding makes TL keep ours; TL then checks what the tokenizer
    # really does and prepends BOS itself in `to_tokens` where needed.
    tokenizer = tokenizer_copy(loaded.tokenizer)
    tokenizer.init_kwargs["name_or_path"] = tokenizer.name_or_path or loaded.spec
    tokenizer.init_kwargs["add_bos_token"] = True
    bridge = TransformerBridge.boot_transformers(
        str(loaded.model.config.name_or_path or loaded.spec),
        hf_model=own_copy,
        tokenizer=tokenizer,
        dtype=next(own_copy.parameters()).dtype,
    )
    bridge.generate = _refuse_cached_generation(bridge.generate)
    bridge.generate_stream = _refuse_cached_generation(bridge.generate_stream)
    return bridge
