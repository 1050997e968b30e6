"""Typed configs of a dictionary and of its training; both round-trip to JSON.

`CrossCoderConfig` describes the model (what `config.json` beside `weights.safetensors` holds);
`TrainingConfig` describes one training run (saved in the run folder and in checkpoints).
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

from interp.errors import InterpError


@dataclass
class Source:
    """Where one input of the dictionary comes from: a model spec and its `resid_post` layer."""

    model: str
    layer: int
    name: str = ""  # e.g. "base" / "chat"; the relative decoder norm needs "base" and "chat"


@dataclass
class CrossCoderConfig:
    n_sources: int
    d_model: int
    dict_size: int
    activation: str = "batchtopk"  # a key of crosscoders.activations.ACTIVATIONS
    k: int = 100  # topk / batchtopk: latents kept per token (batchtopk: k * B per batch)
    # relu_l1: mu of `mu * sum_j f_j * s_j` beside the UN-squared error (losses.py), Minder et al.
    l1_coefficient: float = 0.041
    threshold_beta: float = 0.999  # batchtopk: theta <- beta * theta + (1 - beta) * min kept g
    threshold_start_step: int = 1000  # batchtopk: theta is only updated after this many steps
    auxk_k: int | None = None  # AuxK latents per token; None = d_model // 2 (Gao et al. B.1)
    auxk_alpha: float = 1 / 32  # weight of the AuxK loss; 0 switches it off
    decoder_init_norm: float = 1.0  # ||d_j^m|| at init: 1.0 for BatchTopK, 0.005 for L1
    # The SAE conventions of Gao et al. / Bussmann et al. (dictionary_learning's BatchTopKSAE), for
    # n_sources = 1 only; None = on for an SAE. A crosscoder keeps Minder et al.'s form (the
    # relative decoder norm needs free per-source norms; a centred encoder trained worse: held-out
    # FVE 0.733 vs 0.749 in the 2-source probe of the SAE benchmark's setting).
    apply_b_dec_to_input: bool | None = None  # f = ReLU((x - b_dec) W_enc + b_enc)
    unit_norm_decoder: bool | None = None  # ||d_j|| = 1: dL/dd_j along d_j removed, renormalised
    sources: list[Source] = field(default_factory=list)  # optional provenance, one per source

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, Source) else Source(**s) for s in self.sources]
        if self.apply_b_dec_to_input is None:
            self.apply_b_dec_to_input = self.n_sources == 1
        if self.unit_norm_decoder is None:
            top_k_kind = self.activation in ("topk", "batchtopk")  # relu_l1 weights L1 by ||d_j||
            self.unit_norm_decoder = self.n_sources == 1 and top_k_kind
        self.validate()

    def validate(self) -> None:
        # imported here, not at the top: activations imports torch, and the CLI's option
        # declarations (crosscoders.train_options) read this module for `interp --help`
        from crosscoders.activations import ACTIVATIONS

        if self.activation not in ACTIVATIONS:
            raise InterpError(
                f"unknown activation {self.activation!r}: expected one of {', '.join(ACTIVATIONS)}"
            )
        for name in ("n_sources", "d_model", "dict_size"):
            if getattr(self, name) < 1:
                raise InterpError(f"{name} = {getattr(self, name)}: expected a positive integer")
        if self.activation in ("topk", "batchtopk") and not 1 <= self.k <= self.dict_size:
            raise InterpError(
                f"k = {self.k} is not in 1..dict_size = {self.dict_size}: a top-k dictionary "
                "cannot keep more latents than it has"
            )
        if self.sources and len(self.sources) != self.n_sources:
            raise InterpError(f"{len(self.sources)} sources given for n_sources = {self.n_sources}")
        for name in ("apply_b_dec_to_input", "unit_norm_decoder"):
            if getattr(self, name) and self.n_sources > 1:
                raise InterpError(
                    f"{name} = true needs n_sources = 1 (an SAE), got n_sources = "
                    f"{self.n_sources}: a crosscoder keeps Minder et al.'s form"
                )
        if self.unit_norm_decoder and self.decoder_init_norm != 1.0:
            raise InterpError(
                f"decoder_init_norm = {self.decoder_init_norm} with unit_norm_decoder = true: "
                "expected 1.0"
            )
        if not 0.0 <= self.threshold_beta < 1.0:
            raise InterpError(f"threshold_beta = {self.threshold_beta}: expected 0 <= beta < 1")

    @property
    def k_aux(self) -> int:
        return min(self.auxk_k if self.auxk_k is not None else self.d_model // 2, self.dict_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return _from_dict(cls, data)


@dataclass
class TrainingConfig:
    n_steps: int
    batch_size: int = 2048  # global batch (all DDP ranks together), in tokens
    lr: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 1000  # linear warm-up from 0
    decay_start: float = 0.8  # fraction of n_steps after which lr decays linearly to 0
    grad_clip: float = 1.0  # max global gradient L2 norm
    dead_after_tokens: int = 10_000_000  # a latent is dead after this many tokens without firing
    # batchtopk: theta <- mean batch cutoff (min kept g) of the last this-many training batches
    # under the final weights (Bussmann et al.'s theta = E_B[min kept g]); 0 keeps the EMA's value
    threshold_calibration_batches: int = 10
    b_dec_init: str = "geometric_median"  # geometric_median | mean | zeros
    init_sample_tokens: int = 8192  # tokens read (from the first batches) for b_dec and scales
    normalize_inputs: bool = True  # scale each source so its mean norm is sqrt(d_model)
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    # arithmetic of the training step (crosscoders/trainer.py `TRAINING_PRECISIONS`): float32;
    # tf32 (float32 weights, TF32 matmuls on CUDA); bf16 (autocast: bf16 matmuls, float32 master
    # weights and Adam state, TF32 for the rest on CUDA); auto = bf16 on CUDA, float32 elsewhere
    precision: str = "auto"
    # top-k kinds: train with the kernels of sparse_ops.py (the same values and gradients as the
    # dense formulas; the decoder costs k instead of F per token); False: the dense formulas
    sparse_kernels: bool = True

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]
        if self.n_steps < 1 or self.batch_size < 1:
            raise InterpError(
                f"n_steps = {self.n_steps}, batch_size = {self.batch_size}: expected positive"
            )
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise InterpError(
                f"b_dec_init = {self.b_dec_init!r}: expected geometric_median, mean or zeros"
            )
        if self.threshold_calibration_batches < 0:
            raise InterpError(
                f"threshold_calibration_batches = {self.threshold_calibration_batches}: "
                "expected >= 0"
            )
        if not 0.0 <= self.decay_start <= 1.0:
            raise InterpError(f"decay_start = {self.decay_start}: expected a fraction in [0, 1]")
        if self.precision not in ("auto", "float32", "tf32", "bf16"):
            raise InterpError(
                f"precision = {self.precision!r}: expected auto, float32, tf32 or bf16"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return _from_dict(cls, data)


def _from_dict(cls, data: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InterpError(
            f"unknown {cls.__name__} fields {unknown}: expected some of {sorted(known)}"
        )
    return cls(**data)
