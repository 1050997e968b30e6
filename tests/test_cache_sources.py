"""The cache's own-data sources: a JSONL file of plain texts or chat messages, and a local
Hugging Face dataset folder, read through `--mix` (offline: everything is a local file)."""

import json

import datasets as hf_datasets
import pytest
from cache_support import documents
from tiny_models import save_tiny, tiny_pair
from typer.testing import CliRunner

from interp.cache import ActivationCache
from interp.cache.config import parse_mix
from interp.cache.token_stream import DatasetSource, render_document
from interp.cli.main import app
from interp.errors import InterpError

CHATS = [
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Count to three."},
    ],
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    pair = tiny_pair()
    save_tiny(pair.base, root / "base")
    save_tiny(pair.chat, root / "chat")
    texts = documents(40, seed=5)
    (root / "plain.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    (root / "chats.jsonl").write_text("\n".join(json.dumps({"messages": m}) for m in CHATS * 20))
    hf_datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(root / "hf-plain"))
    hf_datasets.DatasetDict(
        {"train": hf_datasets.Dataset.from_dict({"messages": CHATS * 20})}
    ).save_to_disk(str(root / "hf-chat"))
    return root, pair.chat.tokenizer, texts


def test_jsonl_and_dataset_folders_give_the_records(setup):
    root, tokenizer, texts = setup
    source = DatasetSource()
    plain = source.corpus(str(root / "plain.jsonl"), tokenizer)
    assert (plain.documents, plain.is_chat) == (texts, False)
    chats = source.corpus(str(root / "chats.jsonl"), tokenizer)
    assert chats.is_chat and chats.documents == CHATS * 20
    assert source.corpus(str(root / "hf-plain"), tokenizer).documents == texts
    hf_chat = source.corpus(str(root / "hf-chat"), tokenizer)
    assert hf_chat.is_chat and hf_chat.documents == CHATS * 20


def test_a_folder_named_like_a_bundled_recipe_does_not_shadow_it(setup, tmp_path, monkeypatch):
    _, tokenizer, _ = setup
    (tmp_path / "chat").mkdir()  # e.g. a saved chat model beside the script
    (tmp_path / "wiki").mkdir()
    monkeypatch.chdir(tmp_path)
    source = DatasetSource()
    assert source.corpus("wiki", tokenizer).origin == "wiki (train)"
    assert source.corpus("chat", tokenizer).is_chat


def test_a_conversation_renders_with_the_models_chat_template(setup):
    _, tokenizer, _ = setup
    # ends with the assistant: no generation prompt; ends with the user: the generation prompt
    assert render_document(tokenizer, CHATS[0]) == tokenizer.apply_chat_template(
        CHATS[0], tokenize=False, add_generation_prompt=False
    )
    rendered = render_document(tokenizer, CHATS[1])
    assert rendered == tokenizer.apply_chat_template(
        CHATS[1], tokenize=False, add_generation_prompt=True
    )
    assert "Count to three." in rendered and "Hello!" in rendered
    assert render_document(tokenizer, ("Hi", None)) == tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "a"}', '{"messages": [{"role": "user", "content": "b"}]}'], "all have"),
        (['{"messages": [{"role": "user"}]}'], "messages must be"),
        (["not json"], "line 1 is not JSON"),
    ],
)
def test_bad_jsonl_is_a_clear_error(tmp_path, setup, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(InterpError, match=message):
        DatasetSource().corpus(str(path), setup[1])


def test_mixes_as_dicts_and_bare_hub_ids_parse():
    assert parse_mix({"wiki": 1, "chat": 3}) == (("wiki", 0.25), ("chat", 0.75))
    assert parse_mix("hf:owner/name") == (("hf:owner/name", 1.0),)
    assert parse_mix("hf:owner/name:0.5,wiki:0.5") == (("hf:owner/name", 0.5), ("wiki", 0.5))


def test_interp_cache_reads_a_jsonl_chat_file_and_a_local_dataset_folder(setup):
    root, _, _ = setup
    mix = f"{root / 'chats.jsonl'}:0.5,{root / 'hf-plain'}:0.5"
    result = CliRunner().invoke(app, [
        "cache", "--pair", str(root / "base"), str(root / "chat"), "--layers", "1",
        "--mix", mix, "--tokens", "600", "--ctx", "32", "--batch-size", "4",
        "--out", str(root / "cache"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    cache = ActivationCache(root / "cache")
    assert cache.n_tokens == 600
    manifest = json.loads((root / "cache" / "manifest.json").read_text())
    assert str(root / "chats.jsonl") in json.dumps(manifest)
    assert str(root / "hf-plain") in json.dumps(manifest)
