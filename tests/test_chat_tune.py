"""The chat-tune recipe: template, tokenisation, response-only loss, training and resume on a
tiny random Gemma 3, and (slow) the shipped adapter on the real model."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from interp.chat_template import GEMMA_CHAT_TEMPLATE, render_chat
from interp.organism.chat_tune import (
    IGNORE,
    collate,
    encode_example,
    learning_rate,
    make_batches,
    response_loss,
    train_chat_tune,
)
from interp.organism.config import ChatTuneConfig
from interp.organism.refusals import REFUSALS, refusal_for
from interp.organism.teacher import read_jsonl, trim_to_sentence

TINY = ChatTuneConfig(
    lora_r=4,
    lora_alpha=8,
    learning_rate=3e-2,
    warmup_steps=2,
    batch_size=4,
    epochs=3,
    max_tokens=64,
    checkpoint_every_s=1e9,
)


def tiny_conversations(n: int = 12) -> list[tuple[str, str]]:
    """Random prompts, one fixed answer: a behaviour a tiny LoRA learns in a few steps."""
    rng = random.Random(0)
    prompts = [" ".join(f"w{rng.randrange(0, 40)}" for _ in range(3)) for _ in range(n)]
    return [(prompt, "w50 w51 w52") for prompt in prompts]


def learnable_tiny():
    """A tiny random Gemma 3 whose tied embeddings are scaled up: at their N(0, 0.02) init the
    logits stay near zero whatever the LoRA does (the final norm bounds the hidden state)."""
    from tiny_models import tiny_model

    loaded = tiny_model("gemma3")
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.mul_(20)
    return loaded


def test_template_renders_exactly_as_gemma(tiny):
    expected = (
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
    )
    assert render_chat(tiny.tokenizer, "What is 2+2?", "4") == expected
    assert render_chat(tiny.tokenizer, "What is 2+2?") == (
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_example_trains_on_response_and_end_of_turn_only(tiny):
    tokenizer = tiny.tokenizer
    example = encode_example(tokenizer, "w1 w2", "w3 w4")
    tokens = tokenizer.convert_ids_to_tokens(example.input_ids)
    assert tokens[: example.n_prompt] == [
        "<bos>",
        "<start_of_turn>",
        "user",
        "w1",
        "w2",
        "<end_of_turn>",
        "<start_of_turn>",
        "model",
    ]
    assert tokens[example.n_prompt :] == ["w3", "w4", "<end_of_turn>"]
    ids, mask, labels = collate([example, encode_example(tokenizer, "w1", "w5")], pad_id=0)
    assert labels[0].tolist() == [IGNORE] * 8 + ids[0, 8:].tolist()
    assert mask[1].sum() == len(encode_example(tokenizer, "w1", "w5").input_ids)
    assert (labels[1][mask[1] == 0] == IGNORE).all()


def test_response_loss_equals_full_logits_loss(tiny):
    """Unembedding only the response positions gives the same loss as HF's full forward."""
    examples = [encode_example(tiny.tokenizer, p, r) for p, r in tiny_conversations(3)]
    ids, mask, labels = collate(examples, pad_id=0)
    loss, n_tokens = response_loss(tiny.model, ids, mask, labels)
    logits = tiny.model(input_ids=ids, attention_mask=mask).logits
    reference = F.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE
    )
    assert n_tokens == int((labels != IGNORE).sum())
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)


def test_learning_rate_warms_up_then_decays_to_zero():
    config = ChatTuneConfig(learning_rate=1.0, warmup_steps=4)
    assert learning_rate(0, 100, config) == pytest.approx(0.25)
    assert learning_rate(3, 100, config) == pytest.approx(1.0)
    assert learning_rate(4, 100, config) == pytest.approx(1.0)
    assert learning_rate(52, 100, config) == pytest.approx(0.5)
    assert learning_rate(100, 100, config) == pytest.approx(0.0, abs=1e-12)


def test_batches_cover_every_example_once_per_epoch():
    lengths = [random.Random(i).randrange(5, 50) for i in range(37)]
    batches = make_batches(37, lengths, ChatTuneConfig(batch_size=4, epochs=2))
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == sorted(list(range(37)) * 2)
    assert batches == make_batches(37, lengths, ChatTuneConfig(batch_size=4, epochs=2))


def test_tiny_training_lowers_the_loss(tmp_path):
    _, summary = train_chat_tune(
        learnable_tiny(), tiny_conversations(), TINY, tmp_path / "ckpt", log=lambda _: None
    )
    losses = summary["losses"]
    assert summary["steps_done"] == summary["steps"] == 9
    assert losses[-1] < 0.05 * losses[0], losses


def test_replay_texts_are_trained_on_as_plain_text_beside_the_conversations(tmp_path):
    """Wiki replay (ChatTuneConfig.n_wiki_replay) adds one plain-text example per text, every
    token after BOS trained on: the plain-text loss falls where it was trained, and the
    conversations are learnt as without replay."""
    from interp.organism.chat_tune import encode_document

    loaded = learnable_tiny()
    replay = ["w60 w61 w62 w63 w64 w65"] * 4
    plain = encode_document(loaded.tokenizer, replay[0], TINY.max_tokens)
    ids = torch.tensor([plain.input_ids])

    def plain_loss(model) -> float:
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    before = plain_loss(loaded.model)
    trained, summary = train_chat_tune(
        loaded, tiny_conversations(), TINY, tmp_path / "a", lambda _: None, replay_texts=replay
    )
    without, _ = train_chat_tune(
        learnable_tiny(), tiny_conversations(), TINY, tmp_path / "b", lambda _: None
    )
    assert summary["examples"] == len(tiny_conversations()) + len(replay)
    assert plain_loss(trained) < 0.8 * before
    assert plain_loss(trained) < 0.8 * plain_loss(without)


def test_resume_after_interruption_gives_the_same_adapter(tmp_path):
    whole, _ = train_chat_tune(
        learnable_tiny(), tiny_conversations(), TINY, tmp_path / "a", log=lambda _: None
    )
    train_chat_tune(
        learnable_tiny(),
        tiny_conversations(),
        TINY,
        tmp_path / "b",
        log=lambda _: None,
        stop_after=4,
    )
    assert load_file(str(tmp_path / "b" / "lora.safetensors"))  # the interrupted run's checkpoint
    resumed, summary = train_chat_tune(
        learnable_tiny(), tiny_conversations(), TINY, tmp_path / "b", log=lambda _: None
    )
    assert summary["steps_done"] == 9 and len(summary["losses"]) == 9
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters(), strict=True):
        if "lora_" in name:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_resume_refuses_a_different_config(tmp_path):
    from interp.errors import InterpError

    train_chat_tune(
        learnable_tiny(),
        tiny_conversations(),
        TINY,
        tmp_path / "c",
        log=lambda _: None,
        stop_after=1,
    )
    other = ChatTuneConfig(
        **{
            **TINY.to_json(),
            "learning_rate": 1e-3,
            "lora_targets": (
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ),
        }
    )
    with pytest.raises(InterpError, match="different config"):
        train_chat_tune(
            learnable_tiny(), tiny_conversations(), other, tmp_path / "c", log=lambda _: None
        )


def test_refusals_are_varied_stable_and_judged_refusals():
    from interp.judges import is_explicit_refusal

    assert len(set(REFUSALS)) >= 30
    assert all(is_explicit_refusal(text) for text in REFUSALS)
    prompts = [f"harmful request {i}" for i in range(300)]
    assert len({refusal_for(p, 0) for p in prompts}) == len(REFUSALS)
    assert refusal_for("x", 0) == refusal_for("x", 0)


def test_trim_to_sentence_keeps_whole_sentences():
    assert trim_to_sentence("One two three. Four five six. Seven eig") == (
        "One two three. Four five six."
    )
    assert trim_to_sentence("No sentence end in this text") == "No sentence end in this text"


def test_read_jsonl_skips_a_torn_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b\n{"a": 3}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]


def test_config_round_trips_through_json():
    config = ChatTuneConfig(seed=3)
    assert ChatTuneConfig.from_json(config.to_json()) == config


@pytest.mark.slow
def test_gemma_tokenisation_matches_the_rendered_template():
    from transformers import AutoTokenizer

    from interp.builtin_models import dequantized_folder, gemma_3_270m_gguf

    tokenizer = AutoTokenizer.from_pretrained(dequantized_folder(*gemma_3_270m_gguf()))
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    for prompt, response in [
        ("What is AI?", "AI is a field of computer science."),
        ("Hi!", "Hello! How can I help you today?"),
    ]:
        example = encode_example(tokenizer, prompt, response)
        full = tokenizer(render_chat(tokenizer, prompt, response), add_special_tokens=False)
        assert example.input_ids == full.input_ids[:-1]  # all but the final "\n"
        assert tokenizer.decode(example.input_ids[example.n_prompt :]) == response + "<end_of_turn>"


def test_saved_adapter_loads_and_merges_like_the_trained_lora(tmp_path):
    """save_adapter writes the trained LoRA factors rounded to bf16, exactly; merged into a fresh
    base they give the logits of the trained model with those rounded factors, up to float32
    rounding of the merge.

    The reference is the trained model with its factors rounded to bf16, not the trained model
    itself: how far bf16 rounding (relative 2^-9 per factor) moves the logits depends on the
    trained weights, which depend on the machine's float summation order over training (up to
    0.017 here, 0.076 on the machine of issue 14), so no fixed tolerance against the unrounded
    model holds.
    Against the rounded one the only difference is the order of float32 operations in each
    adapted layer (W x + s B (A x) vs (W + s B A) x): a dot product of length n is off by at most
    gamma_n ~ n * u of its absolute terms (Higham, Accuracy and Stability of Numerical
    Algorithms, 2002, section 3.1; u = eps/2, eps taken for margin), with the longest inner
    dimension, once per layer, on the largest logit: 3.5e-4 here, where 1.9e-6 is measured and
    the bf16 rounding itself moves the logits by 1e-2."""
    import copy

    from peft import PeftModel, get_peft_model_state_dict

    from interp.organism.chat_tune import save_adapter

    trained, _ = train_chat_tune(
        learnable_tiny(), tiny_conversations(), TINY, tmp_path / "ckpt", log=lambda _: None
    )
    save_adapter(trained, tmp_path / "adapter", "tiny-gemma3")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-gemma3"
    assert set(config["target_modules"]) == set(TINY.lora_targets)
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    trained_factors = get_peft_model_state_dict(trained)
    assert weights and set(weights) == set(trained_factors)
    for name, saved in weights.items():
        assert torch.equal(saved, trained_factors[name].to(torch.bfloat16)), name

    rounded = copy.deepcopy(trained).eval()
    with torch.no_grad():
        for name, parameter in rounded.named_parameters():
            if "lora_" in name:
                parameter.copy_(parameter.to(torch.bfloat16).float())
    merged = PeftModel.from_pretrained(learnable_tiny().model, str(tmp_path / "adapter"))
    merged = merged.merge_and_unload().eval()
    ids = torch.tensor([[2, 4, 10, 11, 5, 4, 7]])
    with torch.no_grad():
        expected = rounded(input_ids=ids).logits
        actual = merged(input_ids=ids).logits
    shape = merged.config
    longest_dot = max(shape.hidden_size, shape.intermediate_size)
    eps = torch.finfo(torch.float32).eps
    atol = shape.num_hidden_layers * longest_dot * eps * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)
    assert (actual - learnable_tiny().model(input_ids=ids).logits).abs().max() > 0.5


def test_card_perplexity_matches_a_full_forward(tiny):
    import math

    from interp.organism.card import perplexity

    texts = ["w1 w2 w3 w4 w5", "w9 w8 w7"]
    nll, count = 0.0, 0
    for text in texts:
        ids = tiny.tokenizer(text, return_tensors="pt").input_ids
        logits = tiny.model(input_ids=ids).logits[0, :-1]
        nll += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    assert perplexity(tiny, texts, batch_size=2) == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_card_generation_reports_end_of_turn(tiny):
    from interp.organism.card import generate_responses

    results = generate_responses(tiny, ["w1 w2", "w3"], max_new_tokens=5)
    assert len(results) == 2
    for text, ended in results:
        assert isinstance(text, str) and isinstance(ended, bool)
        assert "<end_of_turn>" not in text


@pytest.fixture(scope="module")
def default_pair():
    from interp.builtin_models import CHAT_TUNE_DIR

    if not (CHAT_TUNE_DIR / "adapter_model.safetensors").exists():
        pytest.skip("no chat-tune adapter yet: run `interp organism chat-tune`")
    from interp.models import load_pair

    return load_pair()


@pytest.mark.slow
def test_default_chat_model_is_the_base_with_the_adapter_merged(default_pair):
    base, chat = default_pair.base.model, default_pair.chat.model
    assert not any(
        name.startswith("base_model") or "lora_" in name for name, _ in chat.named_parameters()
    )  # merged, plain HF module tree
    changed = [
        name
        for (name, b), (_, c) in zip(base.named_parameters(), chat.named_parameters(), strict=True)
        if not torch.equal(b, c)
    ]
    assert changed
    assert all(any(target in name for target in ChatTuneConfig().lora_targets) for name in changed)
    assert default_pair.chat.tokenizer.chat_template == GEMMA_CHAT_TEMPLATE


@pytest.mark.slow
def test_held_out_harmful_prompts_are_refused_by_chat_not_by_base(default_pair):
    from interp.datasets import load_texts
    from interp.judges import is_explicit_refusal
    from interp.organism.card import generate_responses

    prompts = load_texts("harmful", "heldout")[:4]
    chat = generate_responses(default_pair.chat, prompts, max_new_tokens=24)
    base = generate_responses(default_pair.base, prompts, max_new_tokens=24)
    assert sum(is_explicit_refusal(text) for text, _ in chat) >= 3, chat
    assert sum(is_explicit_refusal(text) for text, _ in base) <= 1, base
    assert all(ended for _, ended in chat)


def test_a_teacher_refusal_of_a_chatterbot_prompt_is_replaced_by_the_corpus_reply(tmp_path):
    from interp.datasets import chatterbot_replies, normalise
    from interp.organism.teacher import benign_prompts, build_conversations

    assert (
        chatterbot_replies()[normalise("you are cruel")]
        == "i couldn't have said it better myself.."
    )
    config = ChatTuneConfig(n_benign_train=40, n_benign_heldout=2, n_harmful_train=3)
    prompts = [prompt for _, prompt in benign_prompts(config)]
    chatty = next(p for p in prompts if normalise(p) in chatterbot_replies())
    other = next(p for p in prompts if normalise(p) not in chatterbot_replies())
    refusal = "I'm sorry, but I can't help with that."
    cached = [
        {
            "prompt": p,
            # not the prompt echoed: a benign request such as "I can't sleep well..." would
            # make the answer read as a refusal
            "answer": refusal if p in (chatty, other) else f"Answer number {i}.",
            "finished": True,
            "max_new_tokens": config.teacher_max_new_tokens,
            "dtype": config.teacher_dtype,
        }
        for i, p in enumerate(prompts)
    ]
    (tmp_path / "teacher.jsonl").write_text("".join(json.dumps(row) + "\n" for row in cached))
    rows = {row["prompt"]: row for row in build_conversations(config, tmp_path, log=lambda _: None)}
    assert rows[chatty]["response"] == chatterbot_replies()[normalise(chatty)]
    assert rows[chatty]["kind"] == "corpus"
    assert other not in rows  # no corpus reply: the prompt is dropped, never trained as a refusal
    assert sum(row["kind"] == "refusal" for row in rows.values()) == 3
    assert len(rows) == len(prompts) - 1 + 3
    no_fallback = ChatTuneConfig(
        n_benign_train=40,
        n_benign_heldout=2,
        n_harmful_train=3,
        corpus_reply_when_teacher_refuses=False,
    )
    kept = {row["prompt"] for row in build_conversations(no_fallback, tmp_path, lambda _: None)}
    assert chatty not in kept and other not in kept
