"""The three hook engines against HF's own `hidden_states`, on tiny random models of every family.

Naming rule under test: resid_post[l] = hidden_states[l + 1] for l < n_layers - 1, and
final_norm(resid_post[-1]) = hidden_states[-1] (HF normalises its last hidden state).
"""

import pytest
import torch
from torch import nn

from interp.errors import InterpError
from interp.hooks import (
    block_output,
    decoder_layers,
    nnsight_forward,
    nnsight_generate,
    nnsight_model,
    output_editing_hook,
    residual_stream,
    transformer_lens_bridge,
    transformer_lens_hook_name,
)

TOLERANCE = 1e-5
PROMPT_LEN = 7


def token_ids(vocab_size: int, batch: int = 2, seq: int = PROMPT_LEN, seed: int = 0):
    """Random non-special token ids (the tiny tokenizer's first 6 ids are special)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(6, vocab_size, (batch, seq), generator=generator)


def hf_hidden_states(model: nn.Module, ids: torch.Tensor, attention_mask=None) -> tuple:
    with torch.no_grad():
        return model(ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states


def assert_matches_hidden_states(model: nn.Module, resid: torch.Tensor, hidden: tuple) -> None:
    """resid: [batch, seq, n_layers, d], every layer in order."""
    n_layers = len(decoder_layers(model))
    assert resid.shape[2] == n_layers
    for layer in range(n_layers - 1):
        diff = (resid[:, :, layer] - hidden[layer + 1]).abs().max().item()
        assert diff <= TOLERANCE, f"resid_post[{layer}] differs from hidden_states by {diff}"
    with torch.no_grad():
        normed_last = model.get_decoder().norm(resid[:, :, -1])
    diff = (normed_last - hidden[-1]).abs().max().item()
    assert diff <= TOLERANCE, f"final_norm(resid_post[-1]) differs from hidden_states[-1] by {diff}"
    # The exception is real: the last hidden state is *not* the raw block output.
    assert (resid[:, :, -1] - hidden[-1]).abs().max().item() > 1e-2


def steering_vector(d_model: int, scale: float = 8.0, seed: int = 3) -> torch.Tensor:
    return scale * torch.randn(d_model, generator=torch.Generator().manual_seed(seed))


def test_nnsight_resid_equals_hf_hidden_states(tiny_any):
    ids = token_ids(tiny_any.model.config.vocab_size)
    lm = nnsight_model(tiny_any)
    result = nnsight_forward(lm, ids, read_layers=list(range(tiny_any.n_layers)))
    assert_matches_hidden_states(
        tiny_any.model, result.resid, hf_hidden_states(tiny_any.model, ids)
    )
    with torch.no_grad():
        expected_logits = tiny_any.model(ids).logits
    assert (result.logits - expected_logits).abs().max().item() <= TOLERANCE


def test_nnsight_reads_in_requested_order_with_padding(tiny):
    ids = token_ids(tiny.model.config.vocab_size)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    hidden = hf_hidden_states(tiny.model, ids, attention_mask=mask)
    resid = nnsight_forward(nnsight_model(tiny), ids, [2, 0], attention_mask=mask).resid
    assert (resid[:, :, 0] - hidden[3]).abs().max().item() <= TOLERANCE
    assert (resid[:, :, 1] - hidden[1]).abs().max().item() <= TOLERANCE


def test_transformer_lens_resid_equals_hf_hidden_states(tiny_any):
    ids = token_ids(tiny_any.model.config.vocab_size)
    bridge = transformer_lens_bridge(tiny_any)
    names = [transformer_lens_hook_name(layer) for layer in range(tiny_any.n_layers)]
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids, names_filter=names)
    resid = torch.stack([cache[name] for name in names], dim=2)
    hidden = hf_hidden_states(tiny_any.model, ids)
    assert_matches_hidden_states(tiny_any.model, resid, hidden)
    with torch.no_grad():
        expected_logits = tiny_any.model(ids).logits
    assert (logits - expected_logits).abs().max().item() <= TOLERANCE
    # TL's stop_at_layer=k returns the stream entering block k, i.e. resid_post[k - 1].
    with torch.no_grad():
        stopped = bridge(ids, stop_at_layer=2)
    assert (stopped - hidden[2]).abs().max().item() <= TOLERANCE


def test_transformer_lens_bridge_runs_on_its_own_copy(tiny):
    ids = token_ids(tiny.model.config.vocab_size)
    module_types = [type(module) for module in tiny.model.modules()]
    with torch.no_grad():
        before = tiny.model(ids).logits
    bridge = transformer_lens_bridge(tiny)
    assert [type(module) for module in tiny.model.modules()] == module_types
    with torch.no_grad():
        bridge.run_with_cache(ids)
        after = tiny.model(ids).logits
    assert torch.equal(before, after)
    assert tiny.tokenizer.init_kwargs.get("add_bos_token") is None


def test_transformer_lens_refuses_kv_cached_generation(tiny):
    bridge = transformer_lens_bridge(tiny)
    ids = token_ids(tiny.model.config.vocab_size, batch=1)
    with pytest.raises(InterpError, match="nnsight_generate"):
        bridge.generate(ids, max_new_tokens=3, do_sample=False, verbose=False)
    uncached = bridge.generate(
        ids, max_new_tokens=6, do_sample=False, use_past_kv_cache=False, verbose=False
    )
    expected = tiny.model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert torch.equal(uncached, expected)


def test_residual_stream_early_stop_equals_full_pass(tiny_any):
    ids = token_ids(tiny_any.model.config.vocab_size)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    hidden = hf_hidden_states(tiny_any.model, ids, attention_mask=mask)
    blocks = decoder_layers(tiny_any.model)
    deeper_calls = []
    handle = blocks[2].register_forward_hook(lambda *_: deeper_calls.append(1))
    try:
        resid = residual_stream(tiny_any.model, ids, [1, 0], attention_mask=mask)
    finally:
        handle.remove()
    assert deeper_calls == [], "blocks after the deepest requested layer must not run"
    assert torch.equal(resid[:, :, 0], hidden[2])
    assert torch.equal(resid[:, :, 1], hidden[1])


def test_edit_at_layer_leaves_earlier_layers_and_changes_later_ones(tiny_any):
    ids = token_ids(tiny_any.model.config.vocab_size)
    lm = nnsight_model(tiny_any)
    layers = list(range(tiny_any.n_layers))
    edited_layer = 1
    vector = steering_vector(tiny_any.d_model)
    with torch.no_grad():
        clean = nnsight_forward(lm, ids, layers).resid
        edited = nnsight_forward(lm, ids, layers, edits={edited_layer: lambda h: h + vector}).resid
    assert torch.equal(edited[:, :, :edited_layer], clean[:, :, :edited_layer])
    # The read at the edited layer sees the edit itself.
    assert torch.allclose(edited[:, :, edited_layer], clean[:, :, edited_layer] + vector)
    for layer in layers[edited_layer + 1 :]:
        change = (edited[:, :, layer] - clean[:, :, layer]).abs().max().item()
        assert change > 1e-2, f"layer {layer} did not change after an edit at {edited_layer}"


def test_nnsight_generate_with_edit_equals_plain_forward_hook(tiny_any):
    ids = token_ids(tiny_any.model.config.vocab_size)
    vector = steering_vector(tiny_any.d_model)
    layer, new_tokens = 1, 6
    lm = nnsight_model(tiny_any)
    steered = nnsight_generate(
        lm, ids, new_tokens, edits={layer: lambda h: h + vector}, min_new_tokens=new_tokens
    ).token_ids

    block = decoder_layers(tiny_any.model)[layer]
    handle = block.register_forward_hook(lambda _module, _args, output: output + vector)
    try:
        with torch.no_grad():
            expected = tiny_any.model.generate(
                ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
            )
    finally:
        handle.remove()
    unsteered = nnsight_generate(lm, ids, new_tokens, min_new_tokens=new_tokens).token_ids
    assert torch.equal(steered, expected)
    assert not torch.equal(steered[:, PROMPT_LEN:], unsteered[:, PROMPT_LEN:]), "edit had no effect"


def test_reads_during_cached_generation_equal_a_forward_pass_on_the_result(tiny):
    ids = token_ids(tiny.model.config.vocab_size)
    vector = steering_vector(tiny.d_model, scale=2.0)
    edits = {2: lambda h: h + vector}
    lm = nnsight_model(tiny)
    generated = nnsight_generate(lm, ids, 5, edits=edits, read_layers=[3, 0], min_new_tokens=5)
    assert generated.token_ids.shape == (2, PROMPT_LEN + 5)
    # The model ran on every token but the last one.
    with torch.no_grad():
        replay = nnsight_forward(lm, generated.token_ids[:, :-1], [3, 0], edits=edits).resid
    assert generated.resid.shape == replay.shape
    assert (generated.resid - replay).abs().max().item() <= TOLERANCE


def test_gradients_reach_intervention_parameters(tiny):
    """An affine edit h -> h * scale + bias at layer 1 (LinEAS' form): nnsight's gradients equal
    those of the same edit written as a plain forward hook."""
    ids = token_ids(tiny.model.config.vocab_size)
    target = token_ids(tiny.model.config.vocab_size, seed=1)
    layer = 1

    def loss_and_grads(run) -> tuple[torch.Tensor, ...]:
        scale = nn.Parameter(torch.full((tiny.d_model,), 1.1))
        bias = nn.Parameter(torch.full((tiny.d_model,), 0.1))
        logits = run(lambda h: h * scale + bias)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
        loss.backward()
        return loss.detach(), scale.grad, bias.grad

    lm = nnsight_model(tiny)
    nn_loss, nn_scale_grad, nn_bias_grad = loss_and_grads(
        lambda edit: nnsight_forward(lm, ids, edits={layer: edit}).logits
    )

    def with_plain_hook(edit):
        block = decoder_layers(tiny.model)[layer]
        handle = block.register_forward_hook(lambda _module, _args, output: edit(output))
        try:
            return tiny.model(ids).logits
        finally:
            handle.remove()

    loss, scale_grad, bias_grad = loss_and_grads(with_plain_hook)
    assert nn_scale_grad is not None and nn_scale_grad.abs().sum() > 0
    assert torch.allclose(nn_loss, loss)
    assert torch.allclose(nn_scale_grad, scale_grad, atol=1e-6)
    assert torch.allclose(nn_bias_grad, bias_grad, atol=1e-6)
    assert all(p.grad is None for p in tiny.model.parameters() if not p.requires_grad)


def test_nnsight_model_leaves_the_shared_tokenizer_alone(tiny):
    tiny.tokenizer.padding_side = "right"
    lm = nnsight_model(tiny)
    assert lm.tokenizer.padding_side == "left"
    lm.tokenizer.pad_token = "<unk>"
    assert (tiny.tokenizer.padding_side, tiny.tokenizer.pad_token) == ("right", "<pad>")
    assert tiny.tokenizer(["w1 w2", "w3"], padding=True).input_ids[1] == [12, 0]
    assert lm.tokenizer(["w1 w2", "w3"], padding=True).input_ids[1] == [3, 12]


def test_out_of_range_layer_is_a_clear_error(tiny):
    lm = nnsight_model(tiny)
    with pytest.raises(InterpError, match="layer 4 out of range"):
        nnsight_forward(lm, token_ids(tiny.model.config.vocab_size), read_layers=[4])


class _TupleBlock(torch.nn.Module):
    def forward(self, x):
        return (x * 2, "cache")


class _TensorBlock(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_output_editing_hook_replaces_the_hidden_state_of_tuple_and_tensor_outputs():
    x = torch.ones(1, 2, 3)
    for block, wrap in ((_TupleBlock(), lambda h: (h, "cache")), (_TensorBlock(), lambda h: h)):
        handle = block.register_forward_hook(output_editing_hook(lambda h: h + 1))
        out = block(x)
        handle.remove()
        assert type(out) is type(wrap(x))
        assert torch.equal(block_output(out), torch.full((1, 2, 3), 3.0))
        if isinstance(out, tuple):
            assert out[1:] == ("cache",)  # the rest of the tuple is kept
        assert torch.equal(block_output(block(x)), torch.full((1, 2, 3), 2.0))  # hook removed
