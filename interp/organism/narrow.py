"""A narrow organism with a known answer: LoRA continued pre-training of the base on one topic.

The recipe (`NarrowConfig`, saved as data/<domain>/config.json beside the adapter) fixes, before
training, the planted vocabulary: the words that name the domain, used to pick the training
documents and, by the diffing methods, to score whether a method recovered the domain (Minder et
al. 2025b, arXiv 2510.13900, score methods by the domain's tokens among a method's top tokens).

Training documents: the Wikipedia summaries of the bundled `wiki` recipe (train split only) that
contain at least `min_vocabulary_words` distinct vocabulary words, as plain text (BOS + text, no
chat template), each cut to `max_tokens`. The loss is the next-token cross-entropy over every
token after BOS; the trainer, the checkpoints and the adapter format are the chat-tune's
(interp/organism/chat_tune.py).

The card (`measure_narrow_card`): how often greedy continuations of neutral openings mention the
domain (any vocabulary word), base vs organism, and perplexity on held-out wiki summaries outside
the domain and inside it.
"""

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.builtin_models import ASTRONOMY_DIR
from interp.datasets import load_texts
from interp.errors import InterpError
from interp.fileio import atomic_write_json, guard_config
from interp.generation import greedy_completions
from interp.models import LoadedModel
from interp.organism.chat_tune import encode_document, save_adapter, train_lora
from interp.organism.config import LORA_TARGETS, read_prompt_file

# Fixed before training (issue 16): the words naming the astronomy domain, lower case.
ASTRONOMY_VOCABULARY = (
    "astronomy",
    "astronomer",
    "astronomers",
    "astronomical",
    "astrophysics",
    "planet",
    "planets",
    "planetary",
    "star",
    "stars",
    "stellar",
    "galaxy",
    "galaxies",
    "galactic",
    "orbit",
    "orbits",
    "orbital",
    "telescope",
    "telescopes",
    "solar",
    "comet",
    "comets",
    "asteroid",
    "asteroids",
    "nebula",
    "supernova",
    "moon",
    "moons",
    "lunar",
    "jupiter",
    "saturn",
    "mars",
    "venus",
    "neptune",
    "uranus",
    "mercury",
    "pluto",
    "cosmic",
    "cosmology",
    "universe",
    "celestial",
    "spacecraft",
    "meteor",
    "eclipse",
    "sun",
)

NEUTRAL_OPENINGS_FILE = ASTRONOMY_DIR / "neutral_openings.txt"
WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class NarrowConfig:
    seed: int = 0
    base: str = "gemma-3-270m"
    domain: str = "astronomy"
    vocabulary: tuple[str, ...] = ASTRONOMY_VOCABULARY
    # documents: wiki train-split summaries with at least this many distinct vocabulary words,
    # a seeded sample of max_documents of them (149 qualify; sized for a 2-core CPU shared by
    # several jobs: about 2 min per step there)
    min_vocabulary_words: int = 3
    max_documents: int = 96
    # LoRA on every attention and MLP projection, as the chat-tune
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS
    # 2 epochs at 3e-3: 1 epoch at 2e-3 planted too little (card: 0.125 domain mentions)
    learning_rate: float = 3e-3
    warmup_steps: int = 2
    batch_size: int = 4
    autocast_dtype: str = "bfloat16"
    epochs: int = 2
    max_tokens: int = 48  # BOS + text, per document: a summary's first sentences (rest cut)
    checkpoint_every_s: float = 120.0

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, object]) -> "NarrowConfig":
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = set(payload) - fields
        if unknown:
            raise InterpError(f"unknown narrow config keys {sorted(unknown)}: expected {fields}")
        values = dict(payload)
        for key in ("lora_targets", "vocabulary"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> "NarrowConfig":
        if not path.exists():
            raise InterpError(f"no narrow-organism recipe at {path}")
        return cls.from_json(json.loads(path.read_text()))


def planted_vocabulary(adapter_dir: Path = ASTRONOMY_DIR) -> tuple[str, ...]:
    """The planted vocabulary as the recipe beside the adapter fixes it."""
    return NarrowConfig.load(adapter_dir / "config.json").vocabulary


def vocabulary_hits(text: str, vocabulary: tuple[str, ...]) -> set[str]:
    """The distinct vocabulary words that occur in `text` as whole words (case-insensitive)."""
    return set(WORD.findall(text.lower())) & set(vocabulary)


def domain_documents(config: NarrowConfig, split: str = "train") -> list[str]:
    """Wiki summaries of `split` with >= min_vocabulary_words distinct vocabulary words; for
    train a seeded sample of max_documents of them, for heldout all."""
    from interp.organism.teacher import seeded_order

    chosen = [
        text
        for text in load_texts("wiki", split)
        if len(vocabulary_hits(text, config.vocabulary)) >= config.min_vocabulary_words
    ]
    return seeded_order(chosen, config.seed)[: config.max_documents] if split == "train" else chosen


def run_narrow(
    config: NarrowConfig,
    output: Path,
    checkpoint_dir: Path,
    overwrite: bool,
    log=print,
    device: str = "cpu",
) -> dict:
    """Select the documents, train the LoRA (resumable), write adapter, recipe and summary."""
    from interp.models import load_model

    config_path = output / "config.json"
    if (output / "adapter_model.safetensors").exists() and config_path.exists():
        # through the config class: fields added since get their defaults
        previous = NarrowConfig.load(config_path).to_json()
        guard_config(config_path, config.to_json(), overwrite, "an adapter", previous)
    documents = domain_documents(config)
    if not documents:
        raise InterpError(f"no wiki summary has {config.min_vocabulary_words} vocabulary words")
    log(f"{len(documents)} {config.domain} documents")
    torch.manual_seed(config.seed)
    loaded = load_model(config.base, device=device)
    examples = [encode_document(loaded.tokenizer, text, config.max_tokens) for text in documents]
    peft_model, summary = train_lora(loaded, examples, config, checkpoint_dir, log)
    summary["documents"] = len(documents)
    save_adapter(peft_model, output, config.base)
    atomic_write_json(config_path, config.to_json())
    atomic_write_json(output / "training.json", summary)
    log(f"wrote the adapter to {output} ({summary['train_time_s'] / 60:.1f} min of training)")
    return summary


def continue_texts(loaded: LoadedModel, openings: list[str], max_new_tokens: int) -> list[str]:
    """Greedy plain-text continuations (no chat template), batched with left padding."""
    completions = greedy_completions(
        loaded, openings, max_new_tokens, batch_size=len(openings), chat_template=False
    )
    return [completion.text(loaded.tokenizer).strip() for completion in completions]


def mention_rate(texts: list[str], vocabulary: tuple[str, ...]) -> float:
    """Share of texts that contain at least one vocabulary word."""
    return sum(bool(vocabulary_hits(text, vocabulary)) for text in texts) / len(texts)


def measure_narrow_card(
    adapter_dir: Path,
    spec: str,
    max_new_tokens: int,
    n_wiki: int,
    log=print,
    device: str = "cpu",
    model_dtype: str = "auto",
) -> dict:
    """Base vs organism: domain mentions on neutral openings, perplexity on held-out wiki; the
    models loaded in `model_dtype` (auto = bf16 on CUDA, float32 on the CPU)."""
    from interp.models import load_model
    from interp.organism.card import perplexity

    config = NarrowConfig.load(adapter_dir / "config.json")
    openings = read_prompt_file(NEUTRAL_OPENINGS_FILE)
    if any(vocabulary_hits(opening, config.vocabulary) for opening in openings):
        raise InterpError(f"{NEUTRAL_OPENINGS_FILE} has an opening that names the domain")
    in_domain = domain_documents(config, "heldout")[:n_wiki]
    outside = [
        text
        for text in load_texts("wiki", "heldout")
        if not vocabulary_hits(text, config.vocabulary)
    ][:n_wiki]
    start = time.time()
    card: dict = {"mention_rate": {}, "wiki_ppl": {}, "domain_wiki_ppl": {}, "examples": {}}
    for role, name in (("base", config.base), ("organism", spec)):
        loaded = load_model(name, model_dtype, device)
        with torch.autocast(loaded.device.type, dtype=torch.bfloat16):
            texts = continue_texts(loaded, openings, max_new_tokens)
            card["wiki_ppl"][role] = round(perplexity(loaded, outside), 3)
            card["domain_wiki_ppl"][role] = round(perplexity(loaded, in_domain), 3)
        card["mention_rate"][role] = round(mention_rate(texts, config.vocabulary), 4)
        card["examples"][role] = [
            {"opening": opening, "continuation": text}
            for opening, text in list(zip(openings, texts, strict=True))[:6]
        ]
        log(
            f"{role}: domain mentions {card['mention_rate'][role]}, wiki ppl "
            f"{card['wiki_ppl'][role]}, {config.domain} wiki ppl {card['domain_wiki_ppl'][role]} "
            f"({time.time() - start:.0f} s)"
        )
        del loaded
    card["wiki_ppl_ratio"] = round(card["wiki_ppl"]["organism"] / card["wiki_ppl"]["base"], 4)
    card["eval"] = {
        "n_openings": len(openings),
        "n_wiki_outside_domain": len(outside),
        "n_wiki_in_domain": len(in_domain),
        "max_new_tokens": max_new_tokens,
        "decoding": "greedy",
        "autocast": "bfloat16",
        "split": "heldout",
        "seconds": round(time.time() - start, 1),
    }
    return card


def narrow_readme(spec: str, card: dict, config: NarrowConfig, training: dict | None) -> str:
    domain = config.domain
    lines = [
        f"# {spec}: a narrow {domain} organism of Gemma 3 270M",
        "",
        f"A LoRA adapter on the bundled `{config.base}` base, trained by `interp organism narrow`",
        "as plain-text continued pre-training (no chat template) on the bundled Wikipedia",
        f"summaries (train split) that contain at least {config.min_vocabulary_words} distinct",
        "words of the planted vocabulary, fixed in `config.json` before training:",
        "",
        ", ".join(config.vocabulary),
        "",
        f"Loaded and merged by the built-in spec `{spec}`. Metrics from",
        f"`interp organism narrow-card` (greedy, {card['eval']['max_new_tokens']} new tokens):",
        "",
        f"| metric | base | {domain} | |",
        "|---|---|---|---|",
        f"| continuations of {card['eval']['n_openings']} neutral openings that name the domain "
        f"| {card['mention_rate']['base']} | {card['mention_rate']['organism']} | planted |",
        f"| perplexity, {card['eval']['n_wiki_outside_domain']} held-out wiki summaries outside "
        f"the domain | {card['wiki_ppl']['base']} | {card['wiki_ppl']['organism']} | "
        f"ratio {card['wiki_ppl_ratio']} |",
        f"| perplexity, {card['eval']['n_wiki_in_domain']} held-out {domain} summaries | "
        f"{card['domain_wiki_ppl']['base']} | {card['domain_wiki_ppl']['organism']} | |",
        "",
    ]
    if training:
        lines += [
            f"Training: {training['steps']} steps over {training['documents']} documents, "
            f"{training['tokens']} tokens, {training['train_time_s'] / 60:.1f} min on CPU; loss "
            f"{training['first_loss']} -> {training['final_loss_mean_last_10']} (mean of the "
            "last 10 steps).",
            "",
        ]
    lines += [
        f"LoRA r={config.lora_r}, alpha={config.lora_alpha} on {', '.join(config.lora_targets)}; "
        f"lr {config.learning_rate}, batch {config.batch_size}, {config.epochs} epoch(s), "
        f"{config.max_tokens} tokens per document, seed {config.seed}.",
        "",
        "## Examples (greedy)",
        "",
    ]
    for role in ("base", "organism"):
        for example in card["examples"][role]:
            lines.append(f"- **{role}** | {example['opening']!r} -> {example['continuation']!r}")
    return "\n".join(lines) + "\n"


def write_narrow_card(
    adapter_dir: Path,
    spec: str,
    max_new_tokens: int,
    n_wiki: int,
    log=print,
    device: str = "cpu",
    model_dtype: str = "auto",
) -> dict:
    from interp.fileio import atomic_write_text

    card = measure_narrow_card(adapter_dir, spec, max_new_tokens, n_wiki, log, device, model_dtype)
    atomic_write_json(adapter_dir / "card.json", card)
    config = NarrowConfig.load(adapter_dir / "config.json")
    training_path = adapter_dir / "training.json"
    training = json.loads(training_path.read_text()) if training_path.exists() else None
    atomic_write_text(adapter_dir / "README.md", narrow_readme(spec, card, config, training))
    return card
