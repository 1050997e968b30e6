"""The token stream of a cache: which token ids go through both models, in which order.

Choices (documented in docs/ARCHITECTURE.md, "Activation cache"):
- **Truncate, never pack.** Each document is one sequence, tokenized on its own (plain text with
  the tokenizer's BOS, chat data rendered with the chat template, which holds the BOS) and cut to
  `ctx` tokens. Every cached token therefore sees only its own document as context, and
  `(seq_id, position)` locates it in that document. The rest of a long document is dropped.
- **Token-weighted mixture.** `wiki:0.5,chat:0.5` means half the cached tokens come from each
  recipe. The next sequence always comes from the recipe furthest below its share (ties: first in
  the mixture), so shares are exact up to one sequence, with no randomness in the interleaving.
- **Seeded order.** Each recipe's documents are shuffled by `seed`; a recipe that runs out starts a
  new, reshuffled pass (counted in the manifest as `passes`).
- **Excluded tokens.** By default BOS and PAD are not cached (their norms dwarf everything else,
  Minder et al. 2025); chat-template control tokens are kept because chat-specific latents live
  there. `keep_special` keeps everything. Padding positions are never cached.
- **Batches** are `batch_size` consecutive sequences, right-padded to the longest one. To waste
  little compute on padding (short chat prompts next to ctx-long articles), the drawn sequences
  are sorted by length within windows of LENGTH_SORT_BATCHES batches; `seq_id` is the position
  in that final order. The global token stream is the concatenation of the kept tokens of all
  sequences, exactly `n_tokens` (the last sequence drawn is cached only in part);
  shard k holds stream tokens [k * shard_tokens, (k + 1) * shard_tokens). Because batches and
  shards are fixed by the plan alone, any shard can be (re)computed on its own: that is how resume
  and several processes produce byte-identical caches.

A `TextSource` supplies the documents of a recipe; `DatasetSource` reads `interp.datasets`,
`InMemorySource` takes texts directly (unit tests, notebooks).
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.chat_template import render_chat
from interp.errors import InterpError

TOKENIZE_CHUNK = 256  # documents tokenized per call
LENGTH_SORT_BATCHES = 16  # batches per window of length-sorted sequences


Chat = tuple[str, str | None]  # (user prompt, model response or None for the generation prompt)
# a whole conversation, [{"role": ..., "content": ...}, ...], rendered with the chat template
Messages = list[dict[str, str]]
HF_PREFIX = "hf:"  # a mix entry `hf:owner/name` is a Hugging Face dataset id


@dataclass(frozen=True)
class Corpus:
    """The documents of one recipe: plain texts, or chats rendered with the chat template (which
    adds the BOS itself) when they are tokenized."""

    recipe: str
    documents: list[str] | list[Chat] | list[Messages]
    is_chat: bool
    origin: str  # where the documents came from, for the manifest


def check_recipe(recipe: str) -> None:
    """An InterpError unless `DatasetSource` can read `recipe`: an existing `.txt` or `.jsonl`
    file, `chat`, a recipe of `interp.datasets`, a local dataset folder or `hf:owner/name`
    (checked before any model loads: the CLI's --mix; a hub id is only checked when read)."""
    if recipe.endswith((".txt", ".jsonl")):
        if not Path(recipe).is_file():
            raise InterpError(f"dataset file {recipe!r} does not exist")
        return
    if recipe.startswith(HF_PREFIX):
        return
    from interp import datasets

    known = ["chat", *datasets.list_recipes()]
    if recipe not in known and not Path(recipe).is_dir():
        raise InterpError(
            f"unknown dataset recipe {recipe!r}: expected one of {known}, a .txt or .jsonl file, "
            "a dataset folder or hf:owner/name"
        )


class TextSource(Protocol):
    def corpus(self, recipe: str, tokenizer) -> Corpus: ...

    def describe(self) -> str: ...


class DatasetSource:
    """Recipes of `interp.datasets`. `chat` is the chat-tune's conversations (prompt + response)
    when they have been generated, else the `chat-benign` prompts with the generation prompt;
    `wiki` is plain text; any other recipe is a list of user prompts, rendered as chat. A recipe
    that is the path of a `.txt` file reads one plain document per non-empty line; a `.jsonl`
    file, a local dataset folder or `hf:owner/name` reads records (`user_records`)."""

    PLAIN_RECIPES = ("wiki",)

    def __init__(self, split: str = "train"):
        self.split = split

    def corpus(self, recipe: str, tokenizer) -> Corpus:
        check_recipe(recipe)
        if recipe.endswith(".txt"):
            path = Path(recipe)
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            return Corpus(recipe, lines, False, f"lines of {path.name}")
        if recipe.endswith(".jsonl"):
            return records_corpus(recipe, jsonl_records(Path(recipe)), f"records of {recipe}")
        from interp import datasets

        known = list(datasets.list_recipes())
        # a bundled recipe name wins over a folder of that name in the working directory
        if recipe.startswith(HF_PREFIX) or (
            recipe not in ["chat", *known] and Path(recipe).is_dir()
        ):
            return records_corpus(recipe, *hf_dataset_records(recipe, self.split))
        if recipe == "chat":
            try:
                conversations = datasets.load_conversations(self.split)
            except InterpError:
                conversations = []
            if conversations:
                return Corpus(recipe, conversations, True, f"conversations ({self.split})")
            prompts = datasets.load_texts("chat-benign", self.split)
            chats = [(prompt, None) for prompt in prompts]
            return Corpus(recipe, chats, True, f"chat-benign prompts ({self.split})")
        texts = datasets.load_texts(recipe, self.split)
        if recipe in self.PLAIN_RECIPES:
            return Corpus(recipe, texts, False, f"{recipe} ({self.split})")
        chats = [(prompt, None) for prompt in texts]
        return Corpus(recipe, chats, True, f"{recipe} prompts ({self.split})")

    def describe(self) -> str:
        return f"interp.datasets split={self.split}"


@dataclass
class InMemorySource:
    """Texts given directly: `plain[recipe]` are raw texts, `chats[recipe]` are
    (prompt, response or None) pairs rendered with the chat template."""

    plain: dict[str, list[str]] = field(default_factory=dict)
    chats: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)

    def corpus(self, recipe: str, tokenizer) -> Corpus:
        if recipe in self.plain:
            return Corpus(recipe, list(self.plain[recipe]), False, "in-memory plain texts")
        if recipe in self.chats:
            return Corpus(recipe, list(self.chats[recipe]), True, "in-memory conversations")
        raise InterpError(
            f"unknown dataset recipe {recipe!r}: expected one of "
            f"{sorted([*self.plain, *self.chats])}"
        )

    def describe(self) -> str:
        return "in-memory"


def jsonl_records(path: Path) -> list[dict]:
    if not path.is_file():
        raise InterpError(f"dataset file {str(path)!r} does not exist")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise InterpError(f"{str(path)!r} line {number} is not JSON ({error})") from None
    return records


def hf_dataset_records(recipe: str, split: str) -> tuple[list[dict], str]:
    """The records of a Hugging Face dataset: `hf:owner/name` (hub or local hub cache) or a
    local folder (written by `save_to_disk`, or of data files `load_dataset` reads), split
    `split` when the dataset has splits."""
    try:
        import datasets as hf_datasets
    except ImportError:
        raise InterpError(
            f"dataset {recipe!r} needs the `datasets` package: pip install datasets (or give a "
            ".jsonl file)"
        ) from None
    name = recipe.removeprefix(HF_PREFIX)
    folder = Path(name)
    if folder.is_dir() and any(
        (folder / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")
    ):
        loaded = hf_datasets.load_from_disk(str(folder))
    else:
        loaded = hf_datasets.load_dataset(name)
    if isinstance(loaded, hf_datasets.DatasetDict):
        if split not in loaded:
            raise InterpError(
                f"dataset {recipe!r} has no split {split!r}: expected one of {list(loaded)}"
            )
        loaded = loaded[split]
    return list(loaded), f"dataset {name} ({split})"


def records_corpus(recipe: str, records: list, origin: str) -> Corpus:
    """Records `{"text": ...}` (plain documents) or `{"messages": [{"role", "content"}, ...]}`
    (conversations, rendered with the model's chat template); one kind per source."""
    kinds = {("messages" in r) if isinstance(r, dict) else None for r in records}
    if not records or None in kinds or len(kinds) != 1:
        raise InterpError(
            f'dataset {recipe!r}: expected records that all have "text" or all have '
            '"messages" (a list of {"role", "content"})'
        )
    if kinds == {False}:
        missing = [i for i, r in enumerate(records) if not isinstance(r.get("text"), str)]
        if missing:
            raise InterpError(f'dataset {recipe!r}: record {missing[0]} has no string "text"')
        return Corpus(recipe, [r["text"] for r in records if r["text"].strip()], False, origin)
    conversations = []
    for i, record in enumerate(records):
        messages = record["messages"]
        if not messages or not all(
            isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages
        ):
            raise InterpError(
                f"dataset {recipe!r}: record {i}'s messages must be a non-empty list of "
                '{"role", "content"}'
            )
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    return Corpus(recipe, conversations, True, origin)


def render_document(tokenizer, document: Chat | Messages) -> str:
    """A chat document in the chat template: a (prompt, response) pair, or a conversation,
    which ends with the generation prompt unless its last turn is the assistant's."""
    if isinstance(document, list):
        return tokenizer.apply_chat_template(
            document, tokenize=False, add_generation_prompt=document[-1]["role"] != "assistant"
        )
    return render_chat(tokenizer, *document)


def excluded_token_ids(tokenizer, keep_special: bool) -> list[int]:
    """Token ids never cached: BOS and PAD, unless `keep_special`."""
    if keep_special:
        return []
    ids = {tokenizer.bos_token_id, tokenizer.pad_token_id}
    return sorted(int(token) for token in ids if token is not None)


def _documents(
    corpus: Corpus, tokenizer, ctx: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, int]]:
    """Endless (token ids cut to ctx, pass number): one shuffled pass after another."""
    if not corpus.documents:
        raise InterpError(f"dataset recipe {corpus.recipe!r} has no documents")
    passes = 0
    while True:
        passes += 1
        order = rng.permutation(len(corpus.documents))
        for start in range(0, len(order), TOKENIZE_CHUNK):
            chunk = [corpus.documents[int(i)] for i in order[start : start + TOKENIZE_CHUNK]]
            if corpus.is_chat:
                chunk = [render_document(tokenizer, document) for document in chunk]
            encoded = tokenizer(
                chunk,
                add_special_tokens=not corpus.is_chat,
                truncation=True,
                max_length=ctx,
            )["input_ids"]
            for ids in encoded:
                yield np.asarray(ids, dtype=np.int32), passes


@dataclass
class RecipeUsage:
    recipe: str
    weight: float
    origin: str
    sequences: int = 0
    tokens: int = 0
    passes: int = 0


@dataclass
class TokenPlan:
    """The whole stream: sequences (token ids fed to the models), which of their positions are
    cached, and the batch/shard layout derived from them."""

    sequences: list[np.ndarray]  # int32 token ids, len <= ctx
    keep: list[np.ndarray]  # bool per position: cached or not
    recipe_of: list[int]  # index into usage
    usage: list[RecipeUsage]
    batch_size: int
    n_tokens: int
    shard_tokens: int
    excluded: list[int]
    batch_ends: np.ndarray = field(init=False)  # stream index just after each batch's tokens

    def __post_init__(self) -> None:
        kept = np.array([int(mask.sum()) for mask in self.keep], dtype=np.int64)
        per_batch = np.add.reduceat(kept, np.arange(0, len(kept), self.batch_size))
        self.batch_ends = np.cumsum(per_batch)
        assert self.batch_ends[-1] == self.n_tokens, (self.batch_ends[-1], self.n_tokens)

    @property
    def n_batches(self) -> int:
        return len(self.batch_ends)

    @property
    def n_shards(self) -> int:
        return -(-self.n_tokens // self.shard_tokens)

    def shard_range(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_tokens
        return start, min(start + self.shard_tokens, self.n_tokens)

    def batch_start(self, batch: int) -> int:
        return int(self.batch_ends[batch - 1]) if batch > 0 else 0

    def batches_for(self, start: int, stop: int) -> range:
        """The batches whose tokens overlap stream range [start, stop)."""
        first = int(np.searchsorted(self.batch_ends, start, side="right"))
        last = int(np.searchsorted(self.batch_ends, stop - 1, side="right"))
        return range(first, last + 1)

    def batch_seq_ids(self, batch: int) -> range:
        start = batch * self.batch_size
        return range(start, min(start + self.batch_size, len(self.sequences)))

    def batch_tensors(
        self, batch: int, pad_id: int
    ) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"], Bool[Tensor, "batch seq"]]:
        """(input ids right-padded with pad_id, attention mask, cached positions)."""
        seq_ids = self.batch_seq_ids(batch)
        width = max(len(self.sequences[s]) for s in seq_ids)
        input_ids = torch.full((len(seq_ids), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(seq_ids), width), dtype=torch.long)
        keep = torch.zeros((len(seq_ids), width), dtype=torch.bool)
        for row, seq in enumerate(seq_ids):
            length = len(self.sequences[seq])
            input_ids[row, :length] = torch.from_numpy(self.sequences[seq].astype(np.int64))
            attention[row, :length] = 1
            keep[row, :length] = torch.from_numpy(self.keep[seq])
        return input_ids, attention, keep

    def sha256(self) -> str:
        """Fingerprint of the exact stream (token ids, cached positions, batch layout)."""
        digest = hashlib.sha256(f"{self.batch_size}:{self.n_tokens}:{self.excluded}".encode())
        for ids, keep in zip(self.sequences, self.keep, strict=True):
            digest.update(len(ids).to_bytes(4, "little"))
            digest.update(ids.tobytes())
            digest.update(np.packbits(keep).tobytes())
        return digest.hexdigest()


def plan_token_stream(
    source: TextSource,
    tokenizer,
    mix: tuple[tuple[str, float], ...],
    n_tokens: int,
    ctx: int,
    batch_size: int,
    shard_tokens: int,
    seed: int,
    keep_special: bool,
) -> TokenPlan:
    """Draw sequences from the mixture until exactly `n_tokens` tokens are cached."""
    if n_tokens <= 0:
        raise InterpError(f"bad number of tokens {n_tokens}: expected a positive integer")
    excluded = excluded_token_ids(tokenizer, keep_special)
    excluded_array = np.asarray(excluded, dtype=np.int32)
    corpora = [source.corpus(recipe, tokenizer) for recipe, _ in mix]
    usage = [
        RecipeUsage(recipe, weight, c.origin)
        for (recipe, weight), c in zip(mix, corpora, strict=True)
    ]
    streams = [
        _documents(corpus, tokenizer, ctx, np.random.default_rng([seed, index]))
        for index, corpus in enumerate(corpora)
    ]
    empty_run = [0] * len(mix)  # consecutive documents with nothing to cache, per recipe
    sequences: list[np.ndarray] = []
    keep: list[np.ndarray] = []
    recipe_of: list[int] = []
    total = 0
    while total < n_tokens:
        # The recipe furthest below its token share goes next.
        index = min(range(len(mix)), key=lambda i: usage[i].tokens / usage[i].weight)
        ids, passes = next(streams[index])
        usage[index].passes = passes
        mask = ~np.isin(ids, excluded_array)
        count = int(mask.sum())
        if count == 0:
            empty_run[index] += 1
            if empty_run[index] > len(corpora[index].documents):
                raise InterpError(
                    f"dataset recipe {mix[index][0]!r} yields no tokens to cache "
                    f"(every document is empty or special tokens only)"
                )
            continue
        empty_run[index] = 0
        if total + count > n_tokens:  # the last sequence is cached only up to n_tokens
            cut = np.flatnonzero(mask)[n_tokens - total]
            mask[cut:] = False
            count = n_tokens - total
        sequences.append(ids)
        keep.append(mask)
        recipe_of.append(index)
        usage[index].sequences += 1
        usage[index].tokens += count
        total += count
    window = batch_size * LENGTH_SORT_BATCHES
    order = [
        start + offset
        for start in range(0, len(sequences), window)
        for offset in np.argsort(
            [len(ids) for ids in sequences[start : start + window]], kind="stable"
        )
    ]
    return TokenPlan(
        [sequences[i] for i in order],
        [keep[i] for i in order],
        [recipe_of[i] for i in order],
        usage,
        batch_size,
        n_tokens,
        shard_tokens,
        excluded,
    )
