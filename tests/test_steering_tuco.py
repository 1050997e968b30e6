"""TuCo alpha-scaling as a steering map: strengths against interp.tuco, KV cache, save/load."""

import copy

import pytest
import torch
from test_tuco import PROMPTS, TOLERANCE, shared_head_pair
from tiny_models import save_tiny, tiny_model, tiny_pair

from interp.errors import InterpError
from interp.generation import complete
from interp.models import ModelPair, load_model
from interp.tuco import alpha_scaled, tokenize_prompts
from steering.activations import encode_texts
from steering.methods import SteeringProblem, get_method
from steering.sites import resolve_sites
from steering.steering_map import load_map
from steering.tuco_scaling import TuCoScalingMap


def logits(model, batch, steering_map=None, strength=1.0, inverse=False):
    with torch.no_grad():
        if steering_map is None:
            return model(**batch).logits
        with steering_map.apply(model, strength, inverse=inverse):
            return model(**batch).logits


def alpha_logits(pair, batch, alpha):
    with torch.no_grad(), alpha_scaled(pair, alpha):
        return pair.chat.model(**batch).logits


@pytest.fixture
def shared():
    pair = shared_head_pair("gemma3")
    return pair, tokenize_prompts(pair, PROMPTS)


def test_strength_zero_leaves_outputs_bit_identical(shared):
    pair, batch = shared
    for role in ("chat", "base"):
        steering_map = TuCoScalingMap.from_pair(pair, role)
        model = getattr(pair, role).model
        assert torch.equal(logits(model, batch, steering_map, 0.0), logits(model, batch))
        assert torch.equal(
            logits(model, batch, steering_map, 0.0, inverse=True), logits(model, batch)
        )


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_steering_chat_is_alpha_scaling_with_alpha_one_minus_strength(shared, strength):
    pair, batch = shared
    steering_map = TuCoScalingMap.from_pair(pair, "chat")
    steered = logits(pair.chat.model, batch, steering_map, strength)
    reference = alpha_logits(pair, batch, 1.0 - strength)
    real = batch["attention_mask"].bool()
    assert (steered - reference)[real].abs().max() <= TOLERANCE
    assert (steered - logits(pair.chat.model, batch))[real].abs().max() > 1e-2


def test_full_strength_on_chat_is_the_pretrained_forward(shared):
    """alpha = 0: the pre-training component's forward = the base model (shared embeddings/head)."""
    pair, batch = shared
    steered = logits(pair.chat.model, batch, TuCoScalingMap.from_pair(pair, "chat"), 1.0)
    real = batch["attention_mask"].bool()
    assert (steered - logits(pair.base.model, batch))[real].abs().max() <= TOLERANCE


def test_inverse_on_chat_is_alpha_one_plus_strength(shared):
    pair, batch = shared
    steered = logits(pair.chat.model, batch, TuCoScalingMap.from_pair(pair, "chat"), 0.5, True)
    real = batch["attention_mask"].bool()
    assert (steered - alpha_logits(pair, batch, 1.5))[real].abs().max() <= TOLERANCE


@pytest.mark.parametrize("strength", [0.4, 1.0])
def test_steering_base_adds_strength_times_the_finetuning_component(shared, strength):
    """Base + lambda FTC on the base stream = TuCo's alpha-scaling at alpha = lambda."""
    pair, batch = shared
    steered = logits(pair.base.model, batch, TuCoScalingMap.from_pair(pair, "base"), strength)
    real = batch["attention_mask"].bool()
    assert (steered - alpha_logits(pair, batch, strength))[real].abs().max() <= TOLERANCE


def test_alpha_one_with_an_identical_companion_is_the_plain_chat_forward():
    """FTC = 0 when the companion has the chat model's weights: every strength is the chat model."""
    chat = tiny_model("gemma3", seed=3)
    copy_of_chat = copy.deepcopy(chat)
    copy_of_chat.spec = "copy"
    pair = ModelPair(base=copy_of_chat, chat=chat)
    batch = tokenize_prompts(pair, PROMPTS)
    steering_map = TuCoScalingMap.from_pair(pair, "chat")
    real = batch["attention_mask"].bool()
    for strength in (0.5, 1.0):
        steered = logits(chat.model, batch, steering_map, strength)
        assert (steered - logits(chat.model, batch))[real].abs().max() <= TOLERANCE


@pytest.mark.parametrize(("family", "role"), [("gemma3", "chat"), ("llama", "base")])
def test_generate_with_kv_cache_equals_without(family, role):
    pair = tiny_pair(family)
    batch = tokenize_prompts(pair, PROMPTS, padding_side="left")
    steering_map = TuCoScalingMap.from_pair(pair, role)
    loaded = getattr(pair, role)
    tokens = {}
    for use_cache in (True, False):
        with steering_map.apply(loaded.model, 0.6):
            tokens[use_cache] = complete(loaded, **batch, max_new_tokens=10, use_cache=use_cache)
    plain = complete(loaded, **batch, max_new_tokens=10)
    assert torch.equal(tokens[True], tokens[False])
    assert not torch.equal(tokens[True], plain)


def test_save_load_round_trip_reloads_the_companion_from_its_spec(tmp_path):
    pair = tiny_pair("gemma3")
    folders = {role: save_tiny(getattr(pair, role), tmp_path / role) for role in ("base", "chat")}
    on_disk = ModelPair(
        base=load_model(str(folders["base"])), chat=load_model(str(folders["chat"]))
    )
    saved = TuCoScalingMap.from_pair(on_disk, "chat", info={"note": "x"})
    saved.save(tmp_path / "map")
    loaded = load_map(tmp_path / "map")
    assert type(loaded) is TuCoScalingMap
    assert loaded.config() == saved.config() and loaded.info == saved.info
    assert loaded.companion["spec"] == str(folders["base"]) and loaded.companion["role"] == "base"
    assert len(loaded.companion["fingerprint"]) == 64
    batch = tokenize_prompts(on_disk, PROMPTS)
    # the loaded map has no companion attached: it loads the base model from its recorded spec
    assert torch.equal(
        logits(on_disk.chat.model, batch, loaded, 0.7),
        logits(on_disk.chat.model, batch, saved, 0.7),
    )


def test_a_model_with_other_weights_is_refused():
    pair = tiny_pair("gemma3")
    steering_map = TuCoScalingMap.from_pair(pair, "chat")
    tokens = tokenize_prompts(pair, PROMPTS)
    with pytest.raises(InterpError, match="weights differ from the chat model"):
        logits(pair.base.model, tokens, steering_map, 0.5)
    with pytest.raises(InterpError, match="weights differ from the base model"):
        steering_map.attach(pair.chat)
    with pytest.raises(InterpError, match="weights differ from the chat model"):
        logits(tiny_model("llama").model, tokens, steering_map, 0.5)  # another architecture
    with pytest.raises(InterpError, match="use `apply"):
        steering_map.steer(0, torch.zeros(2, 32), 0.5)


def test_registered_method_fits_on_every_block_and_refuses_other_sites():
    pair = tiny_pair("gemma3")
    method = get_method("tuco")
    source = encode_texts(pair.tokenizer, PROMPTS)

    def problem(sites):
        return SteeringProblem(
            pair.chat.model, sites, source, source, pair.chat.model, pair=pair, steered_role="chat"
        )

    steering_map, log = method.fit(problem(resolve_sites(pair.chat.model, "block")), {})
    assert isinstance(steering_map, TuCoScalingMap) and log is None
    assert steering_map.sites == resolve_sites(pair.chat.model, "block")
    with pytest.raises(InterpError, match="every block"):
        method.fit(problem(resolve_sites(pair.chat.model, "block", [1])), {})
    with pytest.raises(InterpError, match="both models"):
        method.fit(SteeringProblem(pair.chat.model, [], None, None, pair.chat.model), {})
