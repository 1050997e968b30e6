"""The Activation Difference Lens (ADL; Minder et al. 2025b, "Narrow Finetuning Leaves Clearly
Readable Traces in Activation Differences", arXiv 2510.13900; the diffing-toolkit's
`activation_difference_lens`).

- Means (paper section 3): delta_{l,j} = mean over texts of h^chat_{l,j} - h^base_{l,j}, the
  residual `resid_post[l]` at position j = 0..k-1 of unrelated text (tokenized with the
  tokenizer's special tokens, so position 0 is the BOS where the tokenizer adds one, as in the
  reference), for every layer l. Both models read the same first k tokens; texts shorter than
  k + `norm_positions` tokens are skipped.
- Typical norm: the mean ||h^chat_l|| over positions k .. k + norm_positions - 1 (the reference
  skips the first 5 positions for its norm; we read the few positions after the ones we average).
- Logit lens: softmax(W_U FinalNorm(+-delta_{l,j})) of the fine-tuned model (the reference's
  `logit_lens`), top tokens of each sign.
- Patchscope: the fine-tuned model on identity prompts ("man -> man\\n1135 -> 1135\\nhello ->
  hello\\n?" and two others) with `resid_post[l]` at the last position replaced by
  s * ||h_l|| * delta / ||delta||; next-token probabilities averaged over the prompts, kept only
  for tokens in the top 100 of every prompt (the reference's `patchscope_lens` intersection).
- Steering: greedy generations on neutral prompts (chat-formatted) of the fine-tuned and of the
  base model with s * ||h_l|| * delta_{l,j} / ||delta_{l,j}|| added to `resid_post[l]` at every
  position (the reference's `model.steer`); the reference finds s by a grader's coherence
  search, we sweep the given strengths and record the unsteered model's per-token NLL of each
  generation (a coherence check by code).
- TuCo amplification (Nuti et al. 2025, x_{l+1} = x_l + PTC_l + alpha FTC_l, alpha > 1) on the
  same prompts, as a second steering reading of "what fine-tuning added".

Results (`RUN/adl/`): config.json, means.safetensors, logit_lens.json, patchscope.json,
steering.json, summary.json.
"""

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm import tqdm

from crosscoders.diffing.decoder_views import direction_logits
from interp.builtin_models import weights_identity
from interp.errors import InterpError
from interp.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    guard_config,
    read_json,
    writer_lock,
)
from interp.generation import before_stop, complete, decode_completions
from interp.hooks import residual_edit, residual_stream
from interp.layers import resolve_layer
from interp.models import MODEL_DTYPE_RECORDED_BEFORE, ModelPair, dtype_name
from interp.tuco import generate, tokenize_prompts

IDENTITY_PROMPTS = (
    "man -> man\n1135 -> 1135\nhello -> hello\n?",
    "bear -> bear\n42 -> 42\nblue -> blue\n?",
    "921 -> 921\ntarget -> target\nanna -> anna\n?",
)
PATCHSCOPE_INTERSECTION_K = 100

# Neutral requests for steering: everyday tasks unrelated to any planted domain (written for the
# project, in the spirit of the reference's steering_prompts_closed.txt).
NEUTRAL_PROMPTS = (
    "Tell me about your day.",
    "Write a short story about a cat.",
    "What is your favourite season and why?",
    "Describe the ocean.",
    "Give me three tips for staying focused.",
    "What should I cook for dinner tonight?",
    "Explain how a bicycle works.",
    "Write a poem about the morning.",
    "What makes a good friend?",
    "Describe a walk in the park.",
    "What do you think about music?",
    "Tell me something interesting.",
)

FILES = ("means.safetensors", "logit_lens.json", "patchscope.json", "steering.json")


@dataclass
class AdlConfig:
    n_texts: int = 2000  # unrelated texts averaged (the paper: ~10,000)
    positions: int = 5  # k: positions 0..k-1 read separately
    norm_positions: int = 5  # positions k..k+n-1 give the typical activation norm
    layer: str = "0.5"  # where patchscope and steering act (all layers get means and logit lens)
    recipe: str = "wiki"  # interp.datasets recipe of the unrelated texts
    split: str = "train"
    batch_size: int = 32
    top_tokens: int = 20
    patchscope_scales: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    steer_strengths: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    steer_positions: list[int] | None = None  # None: all k positions
    steer_models: list[str] = field(default_factory=lambda: ["chat", "base"])
    n_prompts: int = 8
    max_new_tokens: int = 32
    tuco_alphas: list[float] = field(default_factory=lambda: [2.0])
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.positions < 1 or self.norm_positions < 1 or self.n_texts < 1:
            raise InterpError(
                f"positions = {self.positions}, norm_positions = {self.norm_positions}, n_texts "
                f"= {self.n_texts}: expected positive integers"
            )
        bad = [p for p in self.steer_positions or [] if not 0 <= p < self.positions]
        if bad:
            raise InterpError(
                f"steer positions {bad} are outside 0..{self.positions - 1}: expected positions "
                "that the means cover"
            )
        unknown = sorted(set(self.steer_models) - {"chat", "base"})
        if unknown:
            raise InterpError(f"unknown steered models {unknown}: expected chat and/or base")
        if not 1 <= self.n_prompts <= len(NEUTRAL_PROMPTS):
            raise InterpError(
                f"n_prompts = {self.n_prompts}: expected 1..{len(NEUTRAL_PROMPTS)} neutral prompts"
            )


# ---------------------------------------------------------------------------------- the means


@dataclass
class PositionMeans:
    diff: Float[Tensor, "layers k d"]  # mean h_chat - h_base
    base: Float[Tensor, "layers k d"]
    chat: Float[Tensor, "layers k d"]
    base_norm: Float[Tensor, " layers"]  # mean ||h|| at positions k..k+n-1
    chat_norm: Float[Tensor, " layers"]
    n_texts: int

    def tensors(self) -> dict[str, Tensor]:
        return {
            "diff": self.diff,
            "base_mean": self.base,
            "chat_mean": self.chat,
            "base_norm": self.base_norm,
            "chat_norm": self.chat_norm,
        }


def first_tokens(
    tokenizer, texts: Sequence[str], n_tokens: int, max_texts: int
) -> Int[Tensor, "texts n_tokens"]:
    """The first `n_tokens` ids of each text (special tokens added as the tokenizer does), for
    the first `max_texts` texts that are long enough."""
    rows: list[list[int]] = []
    for text in texts:
        # the reference cuts texts at 10 characters per token before tokenizing, for speed
        ids = tokenizer(text[: 10 * n_tokens + 100], add_special_tokens=True).input_ids
        if len(ids) >= n_tokens:
            rows.append(ids[:n_tokens])
            if len(rows) == max_texts:
                break
    if not rows:
        raise InterpError(f"no text has {n_tokens} tokens: expected longer unrelated texts")
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def position_means(
    pair: ModelPair,
    input_ids: Int[Tensor, "texts n_tokens"],
    positions: int,
    batch_size: int = 32,
    progress: bool = True,
) -> PositionMeans:
    """Per layer and position j < `positions`, the mean of h_chat, h_base and h_chat - h_base
    (float64 sums); per layer the mean norm of each model over the later positions."""
    n_layers = pair.n_layers
    layers = list(range(n_layers))
    n_texts, n_tokens = input_ids.shape
    if n_tokens <= positions:
        raise InterpError(f"{n_tokens} tokens per text: expected more than positions = {positions}")
    sums = {
        role: torch.zeros(n_layers, positions, pair.d_model, dtype=torch.float64)
        for role in ("base", "chat")
    }
    norm_sums = {role: torch.zeros(n_layers, dtype=torch.float64) for role in ("base", "chat")}
    bar = tqdm(total=n_texts, desc="adl means", unit="text", disable=not progress)
    for start in range(0, n_texts, batch_size):
        ids = input_ids[start : start + batch_size]
        for role, loaded in (("base", pair.base), ("chat", pair.chat)):
            resid = residual_stream(loaded.model, ids.to(loaded.device), layers).double().cpu()
            # resid: [batch, n_tokens, layers, d]
            sums[role] += resid[:, :positions].sum(0).permute(1, 0, 2)
            norm_sums[role] += resid[:, positions:].norm(dim=-1).sum((0, 1))
        bar.update(ids.shape[0])
    bar.close()
    base, chat = sums["base"] / n_texts, sums["chat"] / n_texts
    n_norm = n_texts * (n_tokens - positions)
    return PositionMeans(
        diff=(chat - base).float(),
        base=base.float(),
        chat=chat.float(),
        base_norm=(norm_sums["base"] / n_norm).float(),
        chat_norm=(norm_sums["chat"] / n_norm).float(),
        n_texts=n_texts,
    )


# ------------------------------------------------------------------------------ the readings


def unit(vector: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise InterpError("the mean activation difference is zero: the two models agree here")
    return vector / norm


def logit_lens_rows(
    model: nn.Module, tokenizer, diff: Float[Tensor, "layers k d"], top: int
) -> list[dict]:
    """Per layer, position and sign, the top tokens of softmax(W_U FinalNorm(+-delta))."""
    n_layers, k, d = diff.shape
    directions = torch.cat([diff.reshape(-1, d), -diff.reshape(-1, d)])
    probs = direction_logits(model, directions).softmax(-1).cpu()
    best = probs.topk(top, dim=-1)
    rows = []
    for row in range(directions.shape[0]):
        sign, flat = divmod(row, n_layers * k)
        layer, position = divmod(flat, k)
        ids = best.indices[row].tolist()
        rows.append(
            {
                "layer": layer,
                "position": position,
                "sign": "+" if sign == 0 else "-",
                "token_ids": ids,
                "tokens": [tokenizer.decode([i]) for i in ids],
                "probs": [round(float(p), 6) for p in best.values[row]],
            }
        )
    return rows


@torch.no_grad()
def patchscope(
    model: nn.Module,
    tokenizer,
    layer: int,
    vectors: Float[Tensor, "n d"],
    top: int,
    prompts: Sequence[str] = IDENTITY_PROMPTS,
) -> list[dict]:
    """Next-token distributions of the identity prompts with `resid_post[layer]` at their last
    position replaced by each vector; averaged over prompts, zeroed outside the intersection of
    every prompt's top `PATCHSCOPE_INTERSECTION_K`; top tokens per vector."""
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    total = torch.zeros(vectors.shape[0], vocab)
    in_top = torch.zeros(vectors.shape[0], vocab, dtype=torch.int32)
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=True).input_ids
        ids = ids.to(device).repeat(vectors.shape[0], 1)

        def replace_last(hidden: Tensor) -> Tensor:
            hidden = hidden.clone()
            hidden[:, -1] = vectors.to(hidden.dtype).to(hidden.device)
            return hidden

        with residual_edit(model, layer, replace_last):
            probs = model(input_ids=ids, use_cache=False).logits[:, -1].float().softmax(-1).cpu()
        k = min(PATCHSCOPE_INTERSECTION_K, vocab)
        best = probs.topk(k, dim=-1)
        rows = torch.arange(vectors.shape[0])[:, None]
        in_top[rows, best.indices] += 1
        total[rows, best.indices] += best.values
    total[in_top != len(prompts)] = 0
    mean = total / len(prompts)
    best = mean.topk(min(top, vocab), dim=-1)
    out = []
    for row in range(vectors.shape[0]):
        keep = best.values[row] > 0
        ids = best.indices[row][keep].tolist()
        out.append(
            {
                "token_ids": ids,
                "tokens": [tokenizer.decode([i]) for i in ids],
                "probs": [round(float(p), 6) for p in best.values[row][keep]],
            }
        )
    return out


@torch.no_grad()
def mean_nll(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    new_tokens: Tensor,
    keep: Tensor,
) -> list[float]:
    """Per row, the mean negative log-likelihood (nats/token) the (unsteered) model gives to the
    generated tokens marked by `keep` (those before the stop: `interp.generation.before_stop`);
    NaN for an empty generation."""
    ids = torch.cat([prompt_ids, new_tokens.to(prompt_ids.device)], dim=1)
    mask = torch.cat([prompt_mask, keep.long().to(prompt_mask.device)], dim=1)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    start = prompt_ids.shape[1]
    logp = logits[:, start - 1 : -1].log_softmax(-1)
    token_logp = logp.gather(-1, new_tokens.to(logp.device)[..., None])[..., 0].cpu()
    out = []
    for row in range(new_tokens.shape[0]):
        n = int(keep[row].sum())
        out.append(float(-token_logp[row, :n].mean()) if n else float("nan"))
    return out


def texts_and_nll(
    model: nn.Module, tokenizer, batch: dict[str, Tensor], new_tokens: Tensor
) -> tuple[list[str], list[float]]:
    """The completions' texts (cut at the stop) and `model`'s mean NLL of them (`mean_nll`)."""
    nll = mean_nll(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        new_tokens,
        before_stop(tokenizer, new_tokens),
    )
    return decode_completions(tokenizer, new_tokens), nll


@torch.no_grad()
def steered_generations(
    pair: ModelPair,
    role: str,
    prompts: Sequence[str],
    layer: int,
    vector: Float[Tensor, " d"] | None,
    max_new_tokens: int,
) -> tuple[list[str], list[float]]:
    """Greedy completions of the chat-formatted prompts by model `role` with `vector` added to
    `resid_post[layer]` at every position (None: unsteered); and their unsteered NLL."""
    loaded = pair.chat if role == "chat" else pair.base
    batch = tokenize_prompts(pair, list(prompts), chat_template=True, padding_side="left")
    batch = {k: v.to(loaded.device) for k, v in batch.items()}
    if vector is None:
        new = complete(loaded, batch["input_ids"], batch["attention_mask"], max_new_tokens)
    else:
        shift = vector.to(loaded.device)
        with residual_edit(loaded.model, layer, lambda h: h + shift.to(h.dtype)):
            new = complete(loaded, batch["input_ids"], batch["attention_mask"], max_new_tokens)
    return texts_and_nll(loaded.model, pair.tokenizer, batch, new)


@torch.no_grad()
def tuco_generations(
    pair: ModelPair, prompts: Sequence[str], alpha: float, max_new_tokens: int
) -> tuple[list[str], list[float]]:
    """Greedy completions of the alpha-scaled fine-tuned model (interp.tuco.generate) and the
    chat model's unsteered NLL of them."""
    batch = tokenize_prompts(pair, list(prompts), chat_template=True, padding_side="left")
    new = generate(
        pair,
        batch["input_ids"],
        batch["attention_mask"],
        alpha=alpha,
        max_new_tokens=max_new_tokens,
    )
    return texts_and_nll(pair.chat.model, pair.tokenizer, batch, new)


# ------------------------------------------------------------------------------------ the run


def _texts(config: AdlConfig) -> list[str]:
    from interp.datasets import load_texts

    texts = list(load_texts(config.recipe, config.split))
    random.Random(config.seed).shuffle(texts)
    return texts


def load_means(out: Path) -> PositionMeans:
    tensors = load_file(str(Path(out) / "means.safetensors"))
    meta = read_json(Path(out) / "summary.json") if (Path(out) / "summary.json").is_file() else {}
    return PositionMeans(
        diff=tensors["diff"],
        base=tensors["base_mean"],
        chat=tensors["chat_mean"],
        base_norm=tensors["base_norm"],
        chat_norm=tensors["chat_norm"],
        n_texts=int(meta.get("n_texts", 0)),
    )


def run_adl(
    pair: ModelPair,
    out: Path,
    config: AdlConfig,
    texts: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Compute every ADL reading into `out` (resumable: finished files under the same config are
    kept; another config is refused;
    `overwrite` redoes every file). `texts` overrides the recipe's texts.
    Returns summary.json's content."""
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layer = resolve_layer(config.layer, pair.n_layers)
    recorded = {
        "adl": config.to_dict(),
        "base": pair.base.spec,
        "chat": pair.chat.spec,
        "weights": {
            role: _identity(loaded.spec)
            for role, loaded in (("base", pair.base), ("chat", pair.chat))
        },
        "layer": layer,
        "texts": "given" if texts is not None else f"{config.recipe}:{config.split}",
        "model_dtype": dtype_name(pair.base.dtype),  # a resume computes in the same dtype
    }
    with writer_lock(out, "ADL folder"):
        config_path = out / "config.json"
        guard_config(
            config_path,
            recorded,
            overwrite,
            "ADL results",
            recorded_before=MODEL_DTYPE_RECORDED_BEFORE,
        )
        if overwrite:
            for name in (*FILES, "summary.json"):
                (out / name).unlink(missing_ok=True)
        atomic_write_json(config_path, recorded)
        timings: dict[str, float] = {}
        began = time.perf_counter()
        if not (out / "means.safetensors").is_file():
            ids = first_tokens(
                pair.tokenizer,
                texts if texts is not None else _texts(config),
                config.positions + config.norm_positions,
                config.n_texts,
            )
            means = position_means(pair, ids, config.positions, config.batch_size, progress)
            payload = save_bytes(means.tensors())
            atomic_write_bytes(out / "means.safetensors", payload)
            atomic_write_json(out / "summary.json", {"n_texts": means.n_texts})
            timings["means_s"] = time.perf_counter() - began
        means = load_means(out)
        tokenizer = pair.tokenizer
        if not (out / "logit_lens.json").is_file():
            began = time.perf_counter()
            rows = logit_lens_rows(pair.chat.model, tokenizer, means.diff, config.top_tokens)
            atomic_write_json(out / "logit_lens.json", rows)
            timings["logit_lens_s"] = time.perf_counter() - began
        norm = float(means.chat_norm[layer])
        positions = (
            config.steer_positions
            if config.steer_positions is not None
            else list(range(config.positions))
        )
        if not (out / "patchscope.json").is_file():
            began = time.perf_counter()
            rows = []
            for position in range(config.positions):
                direction = unit(means.diff[layer, position])
                vectors = torch.stack([s * norm * direction for s in config.patchscope_scales])
                readings = patchscope(pair.chat.model, tokenizer, layer, vectors, config.top_tokens)
                for scale, reading in zip(config.patchscope_scales, readings, strict=True):
                    rows.append({"layer": layer, "position": position, "scale": scale, **reading})
            atomic_write_json(out / "patchscope.json", rows)
            timings["patchscope_s"] = time.perf_counter() - began
        if not (out / "steering.json").is_file():
            began = time.perf_counter()
            prompts = list(NEUTRAL_PROMPTS[: config.n_prompts])
            rows = []
            jobs = [(role, None, 0.0) for role in config.steer_models]
            jobs += [
                (role, position, strength)
                for role in config.steer_models
                for position in positions
                for strength in config.steer_strengths
            ]
            for role, position, strength in tqdm(jobs, desc="adl steering", disable=not progress):
                vector = (
                    None
                    if position is None
                    else strength * norm * unit(means.diff[layer, position])
                )
                completions, nll = steered_generations(
                    pair, role, prompts, layer, vector, config.max_new_tokens
                )
                rows.append(
                    {
                        "method": "adl",
                        "model": role,
                        "layer": layer,
                        "position": position,
                        "strength": strength,
                        "prompts": prompts,
                        "completions": completions,
                        "nll": nll,
                    }
                )
            for alpha in config.tuco_alphas:
                completions, nll = tuco_generations(pair, prompts, alpha, config.max_new_tokens)
                rows.append(
                    {
                        "method": "tuco",
                        "model": "chat",
                        "alpha": alpha,
                        "prompts": prompts,
                        "completions": completions,
                        "nll": nll,
                    }
                )
            atomic_write_json(out / "steering.json", rows)
            timings["steering_s"] = time.perf_counter() - began
        summary = _summary(means, layer, config)
        previous = read_json(out / "summary.json") if (out / "summary.json").is_file() else {}
        summary["timings_s"] = {**previous.get("timings_s", {}), **timings}
        atomic_write_json(out / "summary.json", summary)
    return summary


def _identity(spec: str) -> str:
    try:
        return weights_identity(spec)
    except (InterpError, OSError):
        return spec  # an in-memory model (tests) has no files to fingerprint


def save_bytes(tensors: dict[str, Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def _summary(means: PositionMeans, layer: int, config: AdlConfig) -> dict:
    """Sizes of the differences: per layer and position ||delta|| / mean ||h_base||, and the
    cosine between positions at the steering layer."""
    relative = (means.diff.norm(dim=-1) / means.base_norm[:, None]).tolist()
    directions = means.diff[layer] / means.diff[layer].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return {
        "n_texts": means.n_texts,
        "layer": layer,
        "positions": config.positions,
        "relative_norm": [[round(v, 6) for v in row] for row in relative],
        "chat_norm": [round(float(v), 4) for v in means.chat_norm],
        "base_norm": [round(float(v), 4) for v in means.base_norm],
        "position_cosine": [[round(float(v), 4) for v in row] for row in directions @ directions.T],
    }


def read_results(out: Path) -> dict:
    """Everything `run_adl` wrote, for the score and the app."""
    out = Path(out)
    readings = (
        "config.json",
        "summary.json",
        "logit_lens.json",
        "patchscope.json",
        "steering.json",
    )
    missing = [name for name in readings if not (out / name).is_file()]
    if missing:
        raise InterpError(f"{str(out)!r} lacks {missing}: run `interp adl` first")
    return {
        "config": read_json(out / "config.json"),
        "summary": read_json(out / "summary.json"),
        "logit_lens": read_json(out / "logit_lens.json"),
        "patchscope": read_json(out / "patchscope.json"),
        "steering": read_json(out / "steering.json"),
    }


def cosine(a: Tensor, b: Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-30))
