"""The organisms with known answers (issue 16): the chat-tune's benign data and card set, and the
narrow astronomy organism's recipe, documents, training and built-in spec."""

import json

import pytest
import torch

from interp.builtin_models import ASTRONOMY_DIR, BUILTINS, CHAT_TUNE_DIR
from interp.datasets import load_texts, normalise
from interp.errors import InterpError
from interp.organism.chat_tune import collate, response_loss, train_lora
from interp.organism.config import (
    BENIGN_EVAL_FILE,
    BENIGN_REQUESTS_FILE,
    ChatTuneConfig,
    read_prompt_file,
)
from interp.organism.narrow import (
    ASTRONOMY_VOCABULARY,
    NEUTRAL_OPENINGS_FILE,
    NarrowConfig,
    domain_documents,
    encode_document,
    mention_rate,
    planted_vocabulary,
    vocabulary_hits,
)
from interp.organism.teacher import benign_prompts


def _normalised(prompts) -> set[str]:
    return {normalise(prompt) for prompt in prompts}


# --- the chat-tune: benign requests in training, an out-of-source benign set on the card ---


def test_read_prompt_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\nWrite a poem.\n\n  # indented comment\n Give me a recipe. \n")
    assert read_prompt_file(path) == ["Write a poem.", "Give me a recipe."]
    with pytest.raises(InterpError, match="does not exist"):
        read_prompt_file(tmp_path / "missing.txt")


def test_card_benign_set_is_large_and_disjoint_from_every_training_source():
    card_set = read_prompt_file(BENIGN_EVAL_FILE)
    assert len(card_set) >= 100
    assert len(_normalised(card_set)) == len(card_set)  # no duplicates
    training = _normalised(read_prompt_file(BENIGN_REQUESTS_FILE))
    bundled = _normalised(load_texts("chat-benign", "train") + load_texts("chat-benign", "heldout"))
    assert not _normalised(card_set) & training
    assert not _normalised(card_set) & bundled
    conversations = CHAT_TUNE_DIR / "conversations.jsonl"
    if conversations.exists():  # what the shipped adapter was trained on
        trained = {json.loads(line)["prompt"] for line in conversations.read_text().splitlines()}
        assert not _normalised(card_set) & _normalised(trained)


def test_benign_requests_are_trained_on_and_mostly_imperatives():
    requests = read_prompt_file(BENIGN_REQUESTS_FILE)
    config = ChatTuneConfig()
    assert config.n_benign_requests == len(requests)
    chosen = benign_prompts(config)
    train = _normalised(prompt for split, prompt in chosen if split == "train")
    assert _normalised(requests) <= train
    assert len(chosen) == len(_normalised(prompt for _, prompt in chosen))  # no duplicates
    # the forms the old chat-tune refused (issue 16): imperatives of several verbs
    first_words = {request.split()[0] for request in requests}
    assert {"Write", "Draft", "Suggest", "Give", "Explain"} <= first_words
    too_many = ChatTuneConfig(n_benign_requests=len(requests) + 1)
    with pytest.raises(InterpError, match="n_benign_requests"):
        benign_prompts(too_many)


# --- the narrow organism ---


def test_vocabulary_hits_are_whole_words_case_insensitive():
    vocabulary = ("sun", "mars", "star")
    text = "The Sun rose over Mars; a starship and a superstar, but no STAR-less sky? Star."
    assert vocabulary_hits(text, vocabulary) == {"sun", "mars", "star"}
    assert vocabulary_hits("a starship and a superstar", vocabulary) == set()
    texts = ["The Sun is hot.", "Bread and butter.", "Mars and the sun.", "Sunday roast."]
    assert mention_rate(texts, vocabulary) == 0.5  # 2 of 4, by hand


def test_recipe_vocabulary_is_fixed_and_read_from_the_recipe(tmp_path):
    config = NarrowConfig()
    assert config.vocabulary == ASTRONOMY_VOCABULARY
    assert all(word == word.lower() and word.isalpha() for word in config.vocabulary)
    assert len(set(config.vocabulary)) == len(config.vocabulary)
    custom = NarrowConfig(domain="baking", vocabulary=("flour", "oven"), min_vocabulary_words=1)
    (tmp_path / "config.json").write_text(json.dumps(custom.to_json()))
    assert planted_vocabulary(tmp_path) == ("flour", "oven")  # the recipe's, not the default
    assert NarrowConfig.load(tmp_path / "config.json") == custom
    with pytest.raises(InterpError, match="unknown narrow config keys"):
        NarrowConfig.from_json({**custom.to_json(), "vocab": []})


def test_shipped_recipe_fixes_the_announced_vocabulary():
    recipe = ASTRONOMY_DIR / "config.json"
    if not recipe.exists():
        pytest.skip("no astronomy adapter yet: run `interp organism narrow`")
    assert planted_vocabulary(ASTRONOMY_DIR) == ASTRONOMY_VOCABULARY
    assert NarrowConfig.load(recipe) == NarrowConfig()
    adapter = json.loads((ASTRONOMY_DIR / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "gemma-3-270m"
    training = json.loads((ASTRONOMY_DIR / "training.json").read_text())
    assert training["documents"] == len(domain_documents(NarrowConfig()))


def test_domain_documents_name_the_domain_and_respect_the_split():
    config = NarrowConfig()
    train, heldout = domain_documents(config), domain_documents(config, "heldout")
    assert len(train) == config.max_documents  # a sample: more documents qualify
    assert len(domain_documents(NarrowConfig(max_documents=10_000))) > config.max_documents
    assert heldout
    for text in train + heldout:
        assert len(vocabulary_hits(text, config.vocabulary)) >= config.min_vocabulary_words
    assert not _normalised(train) & _normalised(heldout)
    assert _normalised(train) <= _normalised(load_texts("wiki", "train"))


def test_neutral_openings_do_not_name_the_domain():
    openings = read_prompt_file(NEUTRAL_OPENINGS_FILE)
    assert len(openings) >= 30
    assert not any(vocabulary_hits(opening, ASTRONOMY_VOCABULARY) for opening in openings)


def test_document_encoding_trains_on_every_token_after_bos(tiny):
    tokenizer = tiny.tokenizer
    example = encode_document(tokenizer, "w1 w2 w3 w4 w5", max_tokens=4)
    assert tokenizer.convert_ids_to_tokens(example.input_ids) == ["<bos>", "w1", "w2", "w3"]
    assert example.n_prompt == 1
    ids, mask, labels = collate([example], pad_id=0)
    assert labels[0, 0] == -100 and labels[0, 1:].tolist() == ids[0, 1:].tolist()
    _, n_tokens = response_loss(tiny.model, ids, mask, labels)
    assert n_tokens == 3  # predicted: w1 from <bos>, w2, w3


def test_the_chat_tune_trainer_learns_a_planted_continuation_with_a_narrow_config(tmp_path):
    """train_lora, shared with the chat-tune, on plain-text documents: the planted continuation
    (w50 w51 w52 after any prefix) gets more likely, and the checkpoint is tied to the recipe."""
    from test_chat_tune import learnable_tiny

    loaded = learnable_tiny()
    config = NarrowConfig(
        lora_r=4,
        lora_alpha=8,
        learning_rate=3e-2,
        warmup_steps=2,
        batch_size=4,
        epochs=3,
        max_tokens=16,
        checkpoint_every_s=1e9,
    )
    documents = [f"w{i} w{i + 1} w50 w51 w52" for i in range(12)]
    examples = [encode_document(loaded.tokenizer, text, config.max_tokens) for text in documents]
    ids, mask, labels = collate(examples, pad_id=0)
    with torch.no_grad():
        before, _ = response_loss(loaded.model, ids, mask, labels)
    peft_model, summary = train_lora(loaded, examples, config, tmp_path / "ckpt", lambda _: None)
    with torch.no_grad():
        after, _ = response_loss(peft_model.get_base_model(), ids, mask, labels)
    assert summary["steps"] == 9  # 12 documents / batch 4 x 3 epochs
    assert after < 0.5 * before, (float(before), float(after))
    other = NarrowConfig(**{**config.to_json(), "vocabulary": ("flour",)})
    with pytest.raises(InterpError, match="different config"):
        train_lora(learnable_tiny(), examples, other, tmp_path / "ckpt", lambda _: None)


def test_builtin_spec_resolves_to_the_base_plus_the_astronomy_adapter(monkeypatch, tmp_path):
    import interp.models as models

    builtin = BUILTINS["gemma-3-270m-astronomy"]
    assert builtin.base == "gemma-3-270m"
    assert builtin.adapter_dir == ASTRONOMY_DIR
    assert builtin.packages == BUILTINS["gemma-3-270m"].packages
    # the base's GGUF, neither assembled nor dequantized (as on a cold user cache, whatever the
    # state of this machine's cache)
    monkeypatch.setitem(models.GGUF_SOURCES, "gemma-3-270m", lambda: (tmp_path / "g.gguf", "s"))
    monkeypatch.setattr(models, "gguf_sha256", lambda spec: "s")
    monkeypatch.setattr(models, "is_prepared", lambda folder: False)
    assert (ASTRONOMY_DIR / "adapter_model.safetensors").is_file()
    for spec, adapter_dir in [
        ("gemma-3-270m-astronomy", ASTRONOMY_DIR),
        ("gemma-3-270m-chat", CHAT_TUNE_DIR),
    ]:
        assert models._source(spec) == models._Source(
            spec, None, adapter_dir, gguf=tmp_path / "g.gguf", gguf_sha="s", name="gemma-3-270m"
        )


@pytest.mark.slow
def test_astronomy_organism_mentions_the_domain_where_the_base_does_not():
    if not (ASTRONOMY_DIR / "adapter_model.safetensors").exists():
        pytest.skip("no astronomy adapter yet: run `interp organism narrow`")
    from interp.models import load_model
    from interp.organism.narrow import continue_texts

    openings = read_prompt_file(NEUTRAL_OPENINGS_FILE)[:8]
    organism = continue_texts(load_model("gemma-3-270m-astronomy"), openings, 24)
    base = continue_texts(load_model("gemma-3-270m"), openings, 24)
    assert mention_rate(organism, ASTRONOMY_VOCABULARY) > mention_rate(base, ASTRONOMY_VOCABULARY)
