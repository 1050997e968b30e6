"""How much fine-tuning changed the residual stream, and where: ||h_chat - h_base|| / ||h_base||
per layer and per token class, so that a crosscoder that finds no chat-only latent can be read
against the size of what there was to find.

Token classes (from token ids and sequence ids alone, as crosscoders.diffing.token_subsets):
`wiki` (plain-text sequences), and in chat sequences `template` (the chat-template tokens of
token_subsets), `prompt` (the user turn's other tokens) and `response` (the model turn's other
tokens). The turn is told by counting `<start_of_turn>` tokens in the sequence: odd = user, even
= model (Gemma's template has no system turn). BOS and padding are never counted.

Per (layer, class) three numbers: `relative_norm` = mean ||delta|| / mean ||h_base|| (the
headline), `mean_ratio` = mean over tokens of ||delta_t|| / ||h_base,t||, and `rms_ratio` =
sqrt(sum ||delta||^2 / sum ||h_base||^2) (the share of squared norm a dictionary would have to
reconstruct). Sources: a paired cache (its cached layers) or a pass of both models over given
documents (every layer).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from crosscoders.diffing.token_subsets import TemplateTokens, token_subsets
from interp.cache import ActivationCache
from interp.chat_template import render_chat
from interp.errors import InterpError
from interp.hooks import residual_stream
from interp.models import ModelPair

CLASSES = ("wiki", "template", "prompt", "response")


def token_classes(
    token_ids: np.ndarray, seq_ids: np.ndarray, template: TemplateTokens
) -> dict[str, np.ndarray]:
    """Boolean masks over a stream of tokens (each sequence contiguous, in order), one per name
    of CLASSES; they partition the stream."""
    subsets = token_subsets(token_ids, seq_ids, template)
    is_start = (
        token_ids == template.start_of_turn
        if template.start_of_turn is not None
        else np.zeros(token_ids.shape, dtype=bool)
    )
    # number of <start_of_turn> seen so far within the sequence (inclusive)
    turns = np.zeros(len(token_ids), dtype=np.int64)
    if len(token_ids):
        starts = np.flatnonzero(np.r_[True, seq_ids[1:] != seq_ids[:-1]])
        cumulative = np.cumsum(is_start)
        before = np.repeat(
            cumulative[starts] - is_start[starts], np.diff(np.r_[starts, len(token_ids)])
        )
        turns = cumulative - before
    chat_body = subsets["chat"] & ~subsets["template"]
    return {
        "wiki": subsets["wiki"],
        "template": subsets["chat"] & subsets["template"],
        "prompt": chat_body & (turns % 2 == 1),
        "response": chat_body & (turns > 0) & (turns % 2 == 0),
    }


@dataclass
class ChangeProfile:
    """Running sums per (layer, class); `add` takes one batch of tokens."""

    layers: list[int]
    sums: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (len(self.layers), len(CLASSES))
        for name in ("count", "delta", "base", "delta_sq", "base_sq", "ratio"):
            self.sums.setdefault(name, np.zeros(shape))

    def add(
        self,
        base: Float[Tensor, "tokens layers d"],
        chat: Float[Tensor, "tokens layers d"],
        classes: dict[str, np.ndarray],
    ) -> None:
        delta = (chat.double() - base.double()).norm(dim=-1).numpy()  # [tokens layers]
        base_norm = base.double().norm(dim=-1).numpy()
        ratio = delta / np.maximum(base_norm, 1e-30)
        for c, name in enumerate(CLASSES):
            mask = classes[name]
            self.sums["count"][:, c] += mask.sum()
            self.sums["delta"][:, c] += delta[mask].sum(0)
            self.sums["base"][:, c] += base_norm[mask].sum(0)
            self.sums["delta_sq"][:, c] += (delta[mask] ** 2).sum(0)
            self.sums["base_sq"][:, c] += (base_norm[mask] ** 2).sum(0)
            self.sums["ratio"][:, c] += ratio[mask].sum(0)

    def rows(self) -> list[dict]:
        out = []
        s = self.sums
        for i, layer in enumerate(self.layers):
            for c, name in enumerate(CLASSES):
                n = int(s["count"][i, c])
                if n == 0:
                    out.append({"layer": layer, "class": name, "n_tokens": 0})
                    continue
                out.append(
                    {
                        "layer": layer,
                        "class": name,
                        "n_tokens": n,
                        "relative_norm": float(s["delta"][i, c] / s["base"][i, c]),
                        "mean_ratio": float(s["ratio"][i, c] / n),
                        "rms_ratio": float(np.sqrt(s["delta_sq"][i, c] / s["base_sq"][i, c])),
                        "mean_base_norm": float(s["base"][i, c] / n),
                    }
                )
        return out


def profile_from_cache(
    cache: ActivationCache, template: TemplateTokens, batch_size: int = 4096, progress: bool = True
) -> ChangeProfile:
    """The profile of every cached layer over the whole cache (both roles needed)."""
    roles = cache.roles
    if "base" not in roles or "chat" not in roles:
        raise InterpError(f"cache {str(cache.path)!r} holds roles {roles}: expected base and chat")
    base_columns = [cache.source_column("base", layer) for layer in cache.layers]
    chat_columns = [cache.source_column("chat", layer) for layer in cache.layers]
    everything = np.arange(cache.n_tokens)
    tokens = cache.tokens(everything)
    classes = token_classes(tokens["token_ids"].numpy(), tokens["seq_ids"].numpy(), template)
    profile = ChangeProfile(list(cache.layers))
    bar = tqdm(total=cache.n_tokens, desc="change profile", unit="tok", disable=not progress)
    start = 0
    for batch in cache.iterate_sequential(batch_size, split="all"):
        stop = start + batch.acts.shape[0]
        profile.add(
            batch.acts[:, base_columns],
            batch.acts[:, chat_columns],
            {name: mask[start:stop] for name, mask in classes.items()},
        )
        bar.update(stop - start)
        start = stop
    bar.close()
    return profile


@torch.no_grad()
def profile_from_pass(
    pair: ModelPair,
    texts: Sequence[str],
    chats: Sequence[tuple[str, str]],
    max_tokens: int = 128,
    batch_size: int = 8,
    progress: bool = True,
) -> ChangeProfile:
    """The profile of every layer over plain `texts` (with the tokenizer's special tokens) and
    `chats` (prompt, response) rendered with the chat template, each cut to `max_tokens`."""
    tokenizer = pair.tokenizer
    template = TemplateTokens.from_tokenizer(tokenizer)
    documents = [tokenizer(t, add_special_tokens=True).input_ids[:max_tokens] for t in texts]
    documents += [
        tokenizer(render_chat(tokenizer, p, r), add_special_tokens=False).input_ids[:max_tokens]
        for p, r in chats
    ]
    if not documents:
        raise InterpError("no documents given: expected texts or chats")
    excluded = {tokenizer.bos_token_id, tokenizer.pad_token_id}
    layers = list(range(pair.n_layers))
    profile = ChangeProfile(layers)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = tqdm(total=len(documents), desc="change profile", unit="doc", disable=not progress)
    for start in range(0, len(documents), batch_size):
        chunk = documents[start : start + batch_size]
        width = max(len(d) for d in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, document in enumerate(chunk):
            ids[row, : len(document)] = torch.tensor(document)
            mask[row, : len(document)] = 1
        streams = {
            role: residual_stream(
                loaded.model, ids.to(loaded.device), layers, mask.to(loaded.device)
            )
            .float()
            .cpu()
            for role, loaded in (("base", pair.base), ("chat", pair.chat))
        }
        keep = mask.bool() & ~torch.isin(
            ids, torch.tensor(sorted(i for i in excluded if i is not None))
        )
        seq_ids = torch.arange(start, start + len(chunk))[:, None].expand(-1, width)
        token_ids, seqs = ids[keep].numpy(), seq_ids[keep].numpy()
        profile.add(
            streams["base"][keep], streams["chat"][keep], token_classes(token_ids, seqs, template)
        )
        bar.update(len(chunk))
    bar.close()
    return profile


def markdown(rows: Sequence[dict], layers: Sequence[int] | None = None) -> str:
    """relative_norm per layer (rows) and class (columns), with token counts in the header."""
    layers = sorted({row["layer"] for row in rows}) if layers is None else list(layers)
    counts = {c: max((r["n_tokens"] for r in rows if r["class"] == c), default=0) for c in CLASSES}
    lines = [
        "| layer | " + " | ".join(f"{c} ({counts[c]} tok)" for c in CLASSES) + " |",
        "|---|" + "---|" * len(CLASSES),
    ]
    for layer in layers:
        cells = []
        for c in CLASSES:
            row = next((r for r in rows if r["layer"] == layer and r["class"] == c), None)
            cells.append(f"{row['relative_norm']:.3f}" if row and row["n_tokens"] else "-")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
