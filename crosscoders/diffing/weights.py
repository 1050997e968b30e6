"""Weight diffing (`interp weights`): the spectrum of every weight matrix's change and the
intruder dimensions of the fine-tuned matrices.

For every 2-D weight W (torch layout [out, in]) that fine-tuning changed, dW = W_chat - W_base:

- singular values s_1 >= s_2 >= ... of dW;
- rank: the number of s_i > s_1 * max(out, in) * eps(float32) (numpy's matrix_rank tolerance);
- effective rank (Roy & Vetterli 2007, "The effective rank: a measure of effective
  dimensionality", EUSIPCO, eq. 2-3): p_i = s_i / sum_j s_j, erank = exp(-sum_i p_i log p_i),
  between 1 (one direction) and the rank (all singular values equal);
- energy shares: sum_{i <= r} s_i^2 / ||dW||_F^2 for r = 1 and r = `top_r` (the LoRA rank when
  read from an adapter);
- intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of
  Equivalence", arXiv 2410.21228, their definition 1): the left singular vectors y_j of the
  fine-tuned matrix W_chat among its top k (by singular value) whose largest cosine similarity
  with every left singular vector x_i of the base matrix, max_i |cos(y_j, x_i)|, is below the
  threshold epsilon (absolute value: a singular vector's sign is arbitrary). Left vectors live
  in the output space of the layer, [out]; counted per layer and module.

Two sources of dW:
- merged weights: two loaded models (`load_pair`: the pair rule is checked first), dW by
  subtraction; matrices with dW exactly 0 (embeddings, norms of a LoRA tune) are counted as
  unchanged and not decomposed;
- a LoRA adapter read from its folder (adapter_config.json + adapter_model.safetensors), never
  merged: dW = (alpha / r) B A (`use_rslora`: alpha / sqrt(r)), B [out, r], A [r, in]. Its SVD
  comes from thin QR factors, B = Q_B R_B and A^T = Q_A R_A, so that
  dW = scale Q_B (R_B R_A^T) Q_A^T and the SVD of the r x r core U_c S V_c^T gives
  dW = (Q_B U_c)(scale S)(Q_A V_c)^T: O((out + in) r^2), without the out x in product. The
  intruder dimensions need the SVD of W_chat itself, so W_base + dW is formed for that alone.

Output folder: config.json, matrices.parquet (+ .csv; one row per changed matrix),
summary.json (per module kind and per layer: intruder counts, mean effective rank, shares).
"""

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor, nn

from crosscoders.diffing.output_folder import claim_output_folder
from interp.errors import InterpError
from interp.fileio import atomic_write_bytes, atomic_write_json

DEFAULT_INTRUDER_K = 10  # top-k fine-tuned singular vectors examined (the paper's figures use 10)
DEFAULT_EPSILON = 0.5  # cosine threshold (the paper sweeps it; lower = stricter)
DEFAULT_TOP_R = 8
KEPT_SINGULAR_VALUES = 32  # per matrix in the table
EPSILON_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the paper sweeps epsilon
LAYER_PATTERN = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.weight$")


# ----------------------------------------------------------------------------- the math


def numerical_rank(singular_values: Float[Tensor, " n"], shape: tuple[int, int]) -> int:
    """Singular values above s_1 * max(shape) * eps(float32) (numpy.linalg.matrix_rank's rule)."""
    if singular_values.numel() == 0 or float(singular_values[0]) == 0.0:
        return 0
    tolerance = float(singular_values[0]) * max(shape) * torch.finfo(torch.float32).eps
    return int((singular_values > tolerance).sum())


def effective_rank(singular_values: Float[Tensor, " n"]) -> float:
    """Roy & Vetterli 2007, eq. 2-3: exp of the entropy of p_i = s_i / sum_j s_j (0 log 0 = 0)."""
    values = singular_values.double()
    total = float(values.sum())
    if total == 0.0:
        return 0.0
    p = values[values > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def energy_share(singular_values: Float[Tensor, " n"], r: int) -> float:
    """sum_{i <= r} s_i^2 / sum_i s_i^2: the share of ||dW||_F^2 in the top r directions."""
    energy = singular_values.double() ** 2
    total = float(energy.sum())
    return float(energy[:r].sum()) / total if total else 0.0


def low_rank_svd(
    b: Float[Tensor, "out r"], a: Float[Tensor, "r in"], scale: float = 1.0
) -> tuple[Float[Tensor, "out r"], Float[Tensor, " r"], Float[Tensor, "in r"]]:
    """U, S, V of scale * b @ a from thin QR factors (module doc), singular values descending."""
    q_b, r_b = torch.linalg.qr(b.double())  # b = Q_B R_B
    q_a, r_a = torch.linalg.qr(a.double().T)  # a^T = Q_A R_A
    u_core, s, vh_core = torch.linalg.svd(r_b @ r_a.T)  # core [r, r]
    u = q_b @ u_core
    if scale < 0:
        u = -u
    return u, s * abs(scale), q_a @ vh_core.T


def max_similarities(
    finetuned_vectors: Float[Tensor, "d k"], base_vectors: Float[Tensor, "d n"]
) -> Float[Tensor, " k"]:
    """max_i |cos(y_j, x_i)| for each column y_j (columns of both are unit vectors)."""
    return (finetuned_vectors.T.double() @ base_vectors.double()).abs().max(dim=1).values


def intruder_count(
    finetuned: Float[Tensor, "out in"],
    base: Float[Tensor, "out in"],
    k: int = DEFAULT_INTRUDER_K,
    epsilon: float = DEFAULT_EPSILON,
) -> tuple[int, list[float]]:
    """Shuttleworth et al. 2024, definition 1: how many of the fine-tuned matrix's top-k left
    singular vectors have max_i |cos(y_j, x_i)| < epsilon against all the base matrix's left
    singular vectors; and those k similarities."""
    u_finetuned = torch.linalg.svd(finetuned.double(), full_matrices=False)[0][:, :k]
    u_base = torch.linalg.svd(base.double(), full_matrices=False)[0]
    similarities = max_similarities(u_finetuned, u_base)
    return int((similarities < epsilon).sum()), [round(float(s), 6) for s in similarities]


# ------------------------------------------------------------------------- the matrices


@dataclass(frozen=True)
class WeightsConfig:
    intruder_k: int = DEFAULT_INTRUDER_K
    epsilon: float = DEFAULT_EPSILON
    top_r: int = DEFAULT_TOP_R  # energy share in the top r (an adapter: its own rank)

    def validate(self) -> None:
        if self.intruder_k < 1 or self.top_r < 1:
            raise InterpError(
                f"intruder k = {self.intruder_k}, top r = {self.top_r}: expected integers >= 1"
            )
        if not 0 < self.epsilon <= 1:
            raise InterpError(f"epsilon = {self.epsilon}: expected a cosine in (0, 1]")


def layer_and_module(name: str) -> tuple[int | None, str]:
    """`model.layers.3.self_attn.q_proj.weight` -> (3, "self_attn.q_proj"); other names: (None,
    the name without `.weight`)."""
    match = LAYER_PATTERN.search(name)
    if match:
        return int(match.group(1)), match.group(2)
    return None, name.removesuffix(".weight")


def spectrum_row(
    name: str,
    shape: tuple[int, int],
    singular_values: Float[Tensor, " n"],
    top_r: int,
) -> dict:
    layer, module = layer_and_module(name)
    values = singular_values.double()
    return {
        "name": name,
        "layer": layer,
        "module": module,
        "rows": shape[0],
        "cols": shape[1],
        "frobenius_sq": float((values**2).sum()),
        "rank": numerical_rank(values, shape),
        "effective_rank": effective_rank(values[: numerical_rank(values, shape)]),
        "top1_share": energy_share(values, 1),
        "top_r": top_r,
        "top_r_share": energy_share(values, top_r),
        "singular_values": [float(v) for v in values[:KEPT_SINGULAR_VALUES]],
    }


def merged_matrices(base: nn.Module, chat: nn.Module) -> Iterator[tuple[str, Tensor, Tensor]]:
    """(name, W_base, W_chat) for every 2-D parameter; a name or shape only one model has is an
    error naming it."""
    base_parameters = dict(base.named_parameters())
    chat_parameters = dict(chat.named_parameters())
    only = sorted(set(base_parameters) ^ set(chat_parameters))
    if only:
        raise InterpError(
            f"the two models have different weight matrices ({only[0]!r} is in only one of "
            "them): expected a base and a fine-tune of the same architecture"
        )
    for name, w_base in base_parameters.items():
        w_chat = chat_parameters[name]
        if w_base.shape != w_chat.shape:
            raise InterpError(
                f"weight {name!r} has shape {tuple(w_base.shape)} in base and "
                f"{tuple(w_chat.shape)} in chat: expected the same architecture"
            )
        if w_base.ndim == 2:
            yield name, w_base.detach(), w_chat.detach()


@dataclass(frozen=True)
class LoraFactors:
    b: Tensor  # [out, r]
    a: Tensor  # [r, in]
    scale: float  # alpha / r (rsLoRA: alpha / sqrt(r))

    def dense(self) -> Tensor:
        return self.scale * (self.b.double() @ self.a.double())


def read_adapter(folder: Path) -> tuple[dict[str, LoraFactors], dict]:
    """The LoRA factors of a PEFT adapter folder, by the base model's parameter name."""
    folder = Path(folder)
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise InterpError(
            f"{str(folder)!r} is not a LoRA adapter folder: expected adapter_config.json and "
            "adapter_model.safetensors"
        )
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise InterpError(
            f"{folder}: adapter type {config.get('peft_type')!r} (dora: {config.get('use_dora')}):"
            " expected a plain LoRA adapter"
        )
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise InterpError(f"{folder}: per-module rank or alpha patterns are not supported")
    tensors = load_file(str(weights_path))
    factors: dict[str, LoraFactors] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise InterpError(f"{folder}: {key!r} has no lora_B partner")
        rank = a.shape[0]
        alpha = float(config["lora_alpha"])
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        factors[name] = LoraFactors(b.float(), a.float(), scale)
    if not factors:
        raise InterpError(f"{folder}: no lora_A/lora_B weights found")
    return factors, config


def adapter_matrices(
    base: nn.Module, factors: dict[str, LoraFactors]
) -> Iterator[tuple[str, Tensor, LoraFactors]]:
    """(name, W_base, factors) for every adapted matrix; a name the base lacks or a shape that
    does not fit is an error naming it."""
    parameters = dict(base.named_parameters())
    for name, factor in factors.items():
        if name not in parameters:
            raise InterpError(
                f"the adapter changes {name!r}, which the base model does not have: expected an "
                "adapter trained on this base"
            )
        w_base = parameters[name].detach()
        shape = (factor.b.shape[0], factor.a.shape[1])
        if tuple(w_base.shape) != shape:
            raise InterpError(
                f"the adapter's {name!r} is {shape}, the base model's is {tuple(w_base.shape)}: "
                "expected an adapter trained on this base"
            )
        yield name, w_base, factor


# ---------------------------------------------------------------------------------- the run


def merged_rows(base: nn.Module, chat: nn.Module, config: WeightsConfig) -> tuple[list, list]:
    """Rows for the changed matrices of two models, and the names of the unchanged ones."""
    rows, unchanged = [], []
    for name, w_base, w_chat in merged_matrices(base, chat):
        if torch.equal(w_base, w_chat):
            unchanged.append(name)
            continue
        delta = w_chat.double() - w_base.double()
        singular_values = torch.linalg.svdvals(delta)
        row = spectrum_row(name, tuple(delta.shape), singular_values, config.top_r)
        count, similarities = intruder_count(w_chat, w_base, config.intruder_k, config.epsilon)
        rows.append(row | {"intruders": count, "max_similarity": similarities})
    return rows, unchanged


def adapter_rows(
    base: nn.Module, factors: dict[str, LoraFactors], config: WeightsConfig
) -> tuple[list, list]:
    """Rows for the matrices a LoRA adapter changes (low-rank SVD), and the unchanged 2-D
    weights of the base."""
    rows = []
    for name, w_base, factor in adapter_matrices(base, factors):
        _, singular_values, _ = low_rank_svd(factor.b, factor.a, factor.scale)
        shape = (factor.b.shape[0], factor.a.shape[1])
        row = spectrum_row(name, shape, singular_values, factor.a.shape[0])
        finetuned = w_base.double() + factor.dense()
        count, similarities = intruder_count(finetuned, w_base, config.intruder_k, config.epsilon)
        rows.append(row | {"intruders": count, "max_similarity": similarities})
    unchanged = [name for name, p in base.named_parameters() if p.ndim == 2 and name not in factors]
    return rows, unchanged


def summarize(table: pd.DataFrame, unchanged: list[str], config: WeightsConfig) -> dict:
    """Per module kind and per layer: intruder counts, mean effective rank and shares."""
    if table.empty:
        return {"n_changed": 0, "n_unchanged": len(unchanged), "intruders": 0}
    by_module = (
        table.groupby("module")
        .agg(
            matrices=("name", "size"),
            intruders=("intruders", "sum"),
            mean_effective_rank=("effective_rank", "mean"),
            mean_top1_share=("top1_share", "mean"),
            mean_top_r_share=("top_r_share", "mean"),
            frobenius_sq=("frobenius_sq", "sum"),
        )
        .reset_index()
    )
    layered = table.dropna(subset=["layer"])
    intruders_by_layer = (
        layered.pivot_table(index="layer", columns="module", values="intruders", aggfunc="sum")
        .fillna(0)
        .astype(int)
    )
    similarities = [s for row in table["max_similarity"] for s in row]
    return {
        "n_changed": len(table),
        "n_unchanged": len(unchanged),
        "unchanged": unchanged,
        "intruders": int(table["intruders"].sum()),
        "intruder_k": config.intruder_k,
        "epsilon": config.epsilon,
        # every matrix's top-k similarities read again at other thresholds (no new SVD)
        "intruders_by_epsilon": {
            str(epsilon): sum(s < epsilon for s in similarities) for epsilon in EPSILON_SWEEP
        },
        "min_max_similarity": min(similarities),
        "mean_effective_rank": float(table["effective_rank"].mean()),
        "mean_top1_share": float(table["top1_share"].mean()),
        "mean_top_r_share": float(table["top_r_share"].mean()),
        "by_module": by_module.to_dict(orient="records"),
        "intruders_by_layer": {
            str(int(layer)): {module: int(n) for module, n in row.items()}
            for layer, row in intruders_by_layer.iterrows()
        },
    }


def write_results(
    out: Path, rows: list[dict], unchanged: list[str], config: WeightsConfig, seconds: float
) -> dict:
    table = pd.DataFrame(rows)
    atomic_write_bytes(out / "matrices.parquet", table.to_parquet(index=False))
    flat = table.drop(columns=["singular_values", "max_similarity"], errors="ignore")
    atomic_write_bytes(out / "matrices.csv", flat.to_csv(index=False).encode())
    summary = summarize(table, unchanged, config) | {"seconds": round(seconds, 2)}
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary, default=float)))
    return summary


def run_weights(
    out: Path,
    base: nn.Module,
    chat: nn.Module | None = None,
    adapter: Path | None = None,
    config: WeightsConfig = WeightsConfig(),
    identity: dict | None = None,
    force: bool = False,
) -> dict:
    """Diff the weights of `base` against `chat` (merged) or against `adapter` (a LoRA folder,
    read unmerged) into `out`; returns the summary."""
    config.validate()
    if (chat is None) == (adapter is None):
        raise InterpError("give either a chat model or a LoRA adapter folder, not both or none")
    factors = read_adapter(adapter)[0] if adapter is not None else None
    out = Path(out)
    source = {"adapter": str(adapter)} if adapter is not None else {"merged": True}
    claim_output_folder(out, {**asdict(config), **source, **(identity or {})}, force)
    started = time.perf_counter()
    with torch.no_grad():
        if factors is not None:
            rows, unchanged = adapter_rows(base, factors, config)
        else:
            assert chat is not None
            rows, unchanged = merged_rows(base, chat, config)
    return write_results(out, rows, unchanged, config, time.perf_counter() - started)
