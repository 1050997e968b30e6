"""How much of a planted domain a diffing method recovers, scored by code from the recipe's
planted vocabulary (Minder et al. 2025b, arXiv 2510.13900, "token relevance" and steering
relevance; their grader is an LLM, ours is this fixed word rule so the table is reproducible).

- A token *matches* the vocabulary when its normalised form (casefolded, the tokenizer's word
  marks, whitespace and surrounding punctuation stripped; chat-control tokens such as
  `<end_of_turn>` kept whole) equals a vocabulary word, starts with a vocabulary word of at least
  `STEM_CHARS` characters (vocabulary "refus" matches "refused"), or is a prefix of at least
  `STEM_CHARS` characters of a vocabulary word (the sub-word "apolog" of "apologize").
- A method's *planted-token count* is the number of distinct normalised matching tokens among its
  first `TOP_TOKENS` tokens (" Sorry" and "sorry" count once).
- A latent method's token list is built from its top latents (ranked by the method's own
  criterion, before any vocabulary is looked at): round-robin over the latents, each giving its
  next decoder-logit-lens token, then its next max-activating-example token, until `TOP_TOKENS`
  distinct tokens are collected. Ten latents thus fill the list with one token of each reading.
- A generation *mentions* the domain when a vocabulary word (or a longer word it starts, for
  words of >= `STEM_CHARS` characters) occurs in it, case-insensitively at a word start;
  control-token words (`<...>`) match as substrings.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TOP_TOKENS = 20
TOP_LATENTS = 10
STEM_CHARS = 4
RECOVERED_TOKENS = 3  # the bar: >= 3 planted tokens in a top-20 ...
RECOVERED_SHARE = 0.5  # ... or >= 50% of steered generations mentioning the domain

_WORD_MARKS = "\u2581\u0120"  # SentencePiece's "▁" and GPT-2's "Ġ" word starts


def normalize_token(token: str) -> str:
    """Casefolded token without word marks, whitespace or surrounding punctuation; a control
    token written `<...>` is kept whole."""
    text = token.strip().strip(_WORD_MARKS).strip().casefold()
    if text.startswith("<") and text.endswith(">") and len(text) > 2:
        return text
    return text.strip(" \t\n.,;:!?\"'`()[]{}*-_/\\|")


def normalize_vocabulary(words: Iterable[str]) -> tuple[str, ...]:
    normalized = [normalize_token(word) for word in words]
    return tuple(sorted({word for word in normalized if word}))


def token_matches(token: str, vocabulary: Sequence[str]) -> bool:
    """Whether `token` names the planted domain (the module docstring's rule); `vocabulary` is
    already normalised (`normalize_vocabulary`)."""
    text = normalize_token(token)
    if not text:
        return False
    for word in vocabulary:
        if text == word:
            return True
        if len(word) >= STEM_CHARS and text.startswith(word):
            return True
        if len(text) >= STEM_CHARS and word.startswith(text):
            return True
    return False


def planted_tokens(
    tokens: Sequence[str], vocabulary: Sequence[str], top: int = TOP_TOKENS
) -> list[str]:
    """The distinct normalised tokens among the first `top` of `tokens` that match."""
    vocabulary = normalize_vocabulary(vocabulary)
    hits: list[str] = []
    for token in tokens[:top]:
        text = normalize_token(token)
        if token_matches(token, vocabulary) and text not in hits:
            hits.append(text)
    return hits


def latent_token_list(
    logit_tokens: Sequence[Sequence[str]],
    example_tokens: Sequence[Sequence[str]],
    top: int = TOP_TOKENS,
) -> list[str]:
    """A latent method's top tokens: round-robin over its ranked latents (row i = latent i),
    each adding its next logit-lens token then its next max-activating token, skipping tokens
    already taken (compared normalised), until `top` tokens or all lists are exhausted."""
    if len(logit_tokens) != len(example_tokens):
        raise ValueError(
            f"{len(logit_tokens)} logit-lens lists vs {len(example_tokens)} example lists: "
            "expected one of each per latent"
        )
    out: list[str] = []
    seen: set[str] = set()
    cursors = [[0, 0] for _ in logit_tokens]
    while len(out) < top:
        progressed = False
        for latent, cursor in enumerate(cursors):
            for source, tokens in enumerate((logit_tokens[latent], example_tokens[latent])):
                while cursor[source] < len(tokens):
                    token = tokens[cursor[source]]
                    cursor[source] += 1
                    key = normalize_token(token) or token
                    if key not in seen:
                        seen.add(key)
                        out.append(token)
                        progressed = True
                        break
                if len(out) == top:
                    return out
        if not progressed:
            break
    return out


def _mention_pattern(vocabulary: Sequence[str]) -> re.Pattern:
    parts = []
    for word in normalize_vocabulary(vocabulary):
        if word.startswith("<"):
            parts.append(re.escape(word))
        elif len(word) >= STEM_CHARS:
            parts.append(r"\b" + re.escape(word))
        else:
            parts.append(r"\b" + re.escape(word) + r"\b")
    return re.compile("|".join(parts) if parts else r"(?!)", re.IGNORECASE)


def mentions_domain(text: str, vocabulary: Sequence[str]) -> bool:
    return bool(_mention_pattern(vocabulary).search(text))


def mention_share(texts: Sequence[str], vocabulary: Sequence[str]) -> float:
    """Share of `texts` that mention the planted domain; NaN for no texts."""
    if not texts:
        return float("nan")
    pattern = _mention_pattern(vocabulary)
    return sum(bool(pattern.search(text)) for text in texts) / len(texts)


def distinct_trigram_ratio(text: str) -> float:
    """Distinct character trigrams / trigrams of `text` (1.0 for texts under 3 characters): a
    degenerate repetition ("!!!!", "a story is a story is ...") scores low, ordinary prose
    ~0.8-1. The language model's own NLL cannot tell: in-context copying makes repetition
    likely."""
    grams = [text[i : i + 3] for i in range(len(text) - 2)]
    return len(set(grams)) / len(grams) if grams else 1.0


@dataclass
class MethodScore:
    """One cell of the table: an organism x method."""

    organism: str
    method: str
    kind: str  # "tokens" | "steering" | "none"
    planted: int | None = None  # tokens: distinct planted tokens in the top 20
    hits: list[str] | None = None  # tokens: which ones
    tokens: list[str] | None = None  # tokens: the top-20 list that was scored
    share: float | None = None  # steering: share of generations mentioning the domain
    baseline_share: float | None = None  # steering: the same, unsteered
    detail: str = ""  # where the number comes from (position, strength, latents)

    @property
    def recovered(self) -> bool | None:
        if self.kind == "tokens" and self.planted is not None:
            return self.planted >= RECOVERED_TOKENS
        if self.kind == "steering" and self.share is not None:
            return self.share >= RECOVERED_SHARE
        return None

    def to_dict(self) -> dict:
        return {
            "organism": self.organism,
            "method": self.method,
            "kind": self.kind,
            "planted": self.planted,
            "hits": self.hits,
            "tokens": self.tokens,
            "share": self.share,
            "baseline_share": self.baseline_share,
            "recovered": self.recovered,
            "detail": self.detail,
        }


def token_score(
    organism: str, method: str, tokens: Sequence[str], vocabulary: Sequence[str], detail: str = ""
) -> MethodScore:
    top = list(tokens[:TOP_TOKENS])
    hits = planted_tokens(top, vocabulary)
    return MethodScore(organism, method, "tokens", len(hits), hits, top, detail=detail)


def steering_score(
    organism: str,
    method: str,
    steered: Sequence[str],
    unsteered: Sequence[str],
    vocabulary: Sequence[str],
    detail: str = "",
) -> MethodScore:
    return MethodScore(
        organism,
        method,
        "steering",
        share=mention_share(steered, vocabulary),
        baseline_share=mention_share(unsteered, vocabulary),
        detail=detail,
    )


def _cell(score: MethodScore) -> str:
    if score.kind == "tokens":
        mark = " **recovered**" if score.recovered else ""
        hits = ", ".join(f"`{h}`" for h in score.hits or []) or "none"
        return f"{score.planted}/{TOP_TOKENS}{mark} ({hits})"
    if score.kind == "steering":
        mark = " **recovered**" if score.recovered else ""
        return f"{score.share:.2f}{mark} (unsteered {score.baseline_share:.2f})"
    return "n/a"


def markdown_table(scores: Sequence[MethodScore]) -> str:
    """One row per organism x method: the score, whether it meets the issue's bar, where it
    comes from."""
    lines = [
        "| organism | method | score | from |",
        "|---|---|---|---|",
    ]
    for score in scores:
        detail = score.detail.replace("|", "\\|")
        lines.append(f"| {score.organism} | {score.method} | {_cell(score)} | {detail} |")
    return "\n".join(lines) + "\n"
