"""Loading specs and the pair rule; the real built-in base in a few slow tests."""

import socket
import time

import pytest
import torch
from tiny_models import CONFIGS, save_tiny, tiny_model, tiny_pair, tiny_tokenizer
from transformers import AutoModelForCausalLM

import interp.models
from interp.errors import InterpError
from interp.hooks import (
    nnsight_forward,
    nnsight_model,
    residual_stream,
    transformer_lens_bridge,
    transformer_lens_hook_name,
)
from interp.layers import resolve_layer
from interp.models import LoadedModel, ModelPair, load_model, load_pair, model_dtype, validate_pair


def tiny_with(family: str = "gemma3", spec: str = "other", **config_changes) -> LoadedModel:
    config = CONFIGS[family]()
    for key, value in config_changes.items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_config(config).eval()
    return LoadedModel(spec=spec, model=model, tokenizer=tiny_tokenizer())


def test_a_pair_of_one_config_and_tokenizer_is_valid():
    pair = tiny_pair("llama")
    assert (pair.d_model, pair.n_layers) == (32, 4)
    validate_pair(pair.base, pair.chat)


MISMATCHES = {
    "d_model": (
        dict(family="gemma3", hidden_size=48, head_dim=12),
        "d_model differs: 'tiny-gemma3-0' has 32, 'other' has 48",
    ),
    "n_layers": (
        dict(family="gemma3", num_hidden_layers=2, layer_types=["sliding_attention"] * 2),
        "n_layers differs: 'tiny-gemma3-0' has 4, 'other' has 2",
    ),
    "family": (
        dict(family="llama"),
        "architecture family differs: 'tiny-gemma3-0' has gemma3_text, 'other' has llama",
    ),
}


@pytest.mark.parametrize("mismatch", MISMATCHES)
def test_mismatched_pair_names_the_mismatch(mismatch):
    changes, message = MISMATCHES[mismatch]
    with pytest.raises(InterpError, match="mismatched pair: " + message):
        ModelPair(base=tiny_model("gemma3"), chat=tiny_with(**changes))


def test_mismatched_vocabulary_names_the_first_differing_entry():
    chat = tiny_model("gemma3")
    chat.spec = "renamed"
    chat.tokenizer.add_tokens(["w-extra"])
    with pytest.raises(InterpError, match=r"tokenizers differ \(96 vs 97 tokens.*'w-extra', 96"):
        ModelPair(base=tiny_model("gemma3"), chat=chat)


def test_load_model_from_a_saved_folder_gives_the_same_model(tmp_path):
    original = tiny_model("qwen2")
    loaded = load_model(str(save_tiny(original, tmp_path / "qwen")))
    ids = torch.tensor([[7, 8, 9, 10]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, original.model(ids).logits)
    assert loaded.family == "qwen2" and not loaded.model.training
    assert loaded.tokenizer.get_vocab() == original.tokenizer.get_vocab()


def test_an_adapter_folder_is_its_base_with_the_adapter_merged(tmp_path):
    """A PEFT LoRA folder as a spec loads the base its adapter_config.json names, merged: how
    `interp organism card --output DIR` measures a new chat-tune before it replaces the built-in."""
    from peft import LoraConfig, get_peft_model

    base = save_tiny(tiny_model("gemma3"), tmp_path / "base")
    lora = get_peft_model(
        load_model(str(base)).model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"])
    )
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter change the model
            torch.nn.init.normal_(parameter, std=0.5, generator=torch.Generator().manual_seed(1))
    lora.save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    assert str(base) in config_path.read_text()
    ids = torch.tensor([[7, 8, 9, 10]])
    with torch.no_grad():
        expected = lora(input_ids=ids).logits
        pair = load_pair(str(base), str(tmp_path / "adapter"))
        torch.testing.assert_close(pair.chat.model(ids).logits, expected, atol=1e-5, rtol=0)
        assert (pair.chat.model(ids).logits - pair.base.model(ids).logits).abs().max() > 1e-3
    config_path.write_text("{}")
    with pytest.raises(InterpError, match="base_model_name_or_path"):
        load_model(str(tmp_path / "adapter"))


def test_load_pair_refuses_a_mismatch_before_reading_weights(tmp_path, monkeypatch):
    base = save_tiny(tiny_model("gemma3"), tmp_path / "base")
    chat = save_tiny(tiny_model("llama"), tmp_path / "chat")

    def no_weights(*_args, **_kwargs):
        raise AssertionError("weights were loaded before the pair was validated")

    monkeypatch.setattr(interp.models, "_load_weights", no_weights)
    with pytest.raises(InterpError, match="architecture family differs"):
        load_pair(str(base), str(chat))


def test_load_pair_of_matching_folders(tmp_path):
    pair = tiny_pair("gemma2")
    base = save_tiny(pair.base, tmp_path / "base")
    chat = save_tiny(pair.chat, tmp_path / "chat")
    loaded = load_pair(str(base), str(chat))
    assert loaded.base.spec == str(base) and loaded.n_layers == 4
    for reloaded, original in zip(loaded, pair, strict=True):
        assert torch.equal(reloaded.model.lm_head.weight, original.model.lm_head.weight)


def test_missing_gguf_is_a_clear_error(tmp_path):
    with pytest.raises(InterpError, match="GGUF file .*missing.gguf' does not exist"):
        load_model(str(tmp_path / "missing.gguf"))


@pytest.mark.parametrize("spec", ["not a model spec", "/no/such/folder"])
def test_unknown_spec_is_a_clear_error(spec):
    with pytest.raises(InterpError, match=f"cannot load model '{spec}': not a built-in"):
        load_model(spec)


# ------------------------------------------------------------------- the real built-in base


def refuse_network(*_args, **_kwargs):
    raise OSError("network access while loading a built-in model")


@pytest.fixture(scope="module")
def gemma_base() -> tuple[LoadedModel, float, float]:
    """The built-in base, loaded with sockets disabled, with the wall and CPU seconds that load
    took once the dequantized safetensors cache exists."""
    # builds the cache if missing (about a minute, untimed)
    interp.models._prepared(interp.models._source("gemma-3-270m"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse_network)
        patch.setattr(socket, "create_connection", refuse_network)
        wall, cpu = time.perf_counter(), time.process_time()
        loaded = load_model("gemma-3-270m")
        return loaded, time.perf_counter() - wall, time.process_time() - cpu


@pytest.mark.slow
def test_builtin_base_loads_offline_from_the_safetensors_cache(gemma_base):
    """A second load (from the safetensors cache) takes seconds of CPU (~4 s: mostly parsing
    the 33 MB tokenizer.json), not the minute of dequantizing again. CPU time, not wall time:
    a shared machine stretched the same 3.6 s of CPU to 10.5 s of wall."""
    loaded, wall, cpu = gemma_base
    assert cpu < 10, f"a load from the safetensors cache took {cpu:.1f} s CPU ({wall:.1f} s wall)"
    assert (loaded.family, loaded.n_layers, loaded.d_model) == ("gemma3_text", 18, 640)


@pytest.mark.slow
def test_builtin_base_knows_paris(gemma_base):
    """The Q4_K_M base continues "The capital of France is" with " the capital of the country
    of France", but " Paris" is among its top 3 next tokens; a more constraining prompt makes it
    say Paris greedily."""
    loaded, _wall, _cpu = gemma_base
    tokenizer = loaded.tokenizer
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        top3 = loaded.model(ids).logits[0, -1].topk(3).indices
    assert " Paris" in [tokenizer.decode([int(i)]) for i in top3]

    ids = tokenizer("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
    with torch.no_grad():
        out = loaded.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


@pytest.mark.slow
def test_builtin_base_hooks_agree_with_hidden_states(gemma_base):
    """nnsight, TransformerLens (named hook and stop_at_layer) and the early-stopping read give
    HF's hidden_states[l + 1] at the middle layer of the real model. Its residual stream reaches
    ~1e5 there, so the tolerance is relative: float32 rounding, not a different computation."""
    loaded, _wall, _cpu = gemma_base
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    layer = resolve_layer(0.5, loaded.n_layers)
    with torch.no_grad():
        expected = loaded.model(ids, output_hidden_states=True).hidden_states[layer + 1]
        bridge = transformer_lens_bridge(loaded)
        _logits, cache = bridge.run_with_cache(
            ids, names_filter=[transformer_lens_hook_name(layer)]
        )
        reads = {
            "nnsight": nnsight_forward(nnsight_model(loaded), ids, [layer]).resid[:, :, 0],
            "transformer_lens": cache[transformer_lens_hook_name(layer)],
            "transformer_lens_stop_at_layer": bridge(ids, stop_at_layer=layer + 1),
            "residual_stream": residual_stream(loaded.model, ids, [layer])[:, :, 0],
        }
    scale = expected.abs().max().item()
    assert scale > 1e3
    for engine, read in reads.items():
        diff = (read - expected).abs().max().item()
        assert diff <= 1e-6 * scale, (
            f"{engine} differs from hidden_states by {diff} (scale {scale})"
        )


def test_soft_capped_attention_runs_eager_even_where_the_class_claims_sdpa(monkeypatch):
    """transformers 5.17's Gemma2ForCausalLM says `_supports_sdpa` and its SDPA path ignores the
    softcap it is passed: a soft-capping config must load eager whatever the class says."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from interp.models import attention_implementation

    monkeypatch.setattr(Gemma2ForCausalLM, "_supports_sdpa", True)
    assert attention_implementation(Gemma2Config(attn_logit_softcapping=50.0)) == "eager"
    assert attention_implementation(Gemma2Config(attn_logit_softcapping=None)) == "sdpa"


@pytest.mark.parametrize(
    ("family", "attention"), [("gemma3", "sdpa"), ("llama", "sdpa"), ("gemma2", "eager")]
)
def test_models_load_in_the_dtype_asked_with_sdpa_where_the_architecture_has_it(
    tmp_path, family, attention
):
    original = tiny_model(family)
    folder = str(save_tiny(original, tmp_path / family))
    for name in ("bf16", "bfloat16"):
        loaded = load_model(folder, dtype=name)
        assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
        assert loaded.model.config._attn_implementation == attention
        assert torch.equal(  # the same weights, rounded once to bf16
            loaded.model.lm_head.weight, original.model.lm_head.weight.to(torch.bfloat16)
        )
    loaded = load_model(folder, dtype="auto")  # on the CPU: float32
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    ids = torch.tensor([[7, 8, 9, 10]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, original.model(ids).logits)


def test_auto_model_dtype_is_bf16_on_cuda_and_fp32_elsewhere():
    assert model_dtype("auto", "cuda") == model_dtype("AUTO", "cuda:1") == torch.bfloat16
    assert model_dtype("auto", "cpu") == torch.float32
    assert model_dtype("fp16", "cpu") == model_dtype("float16", "cuda") == torch.float16
    assert model_dtype(torch.float32, "cuda") == torch.float32
    with pytest.raises(InterpError, match=r"^unknown model dtype 'int8': expected auto, bf16"):
        model_dtype("int8", "cpu")
