"""The options of training one dictionary (`interp train crosscoder|sae`, a pipeline's
[train.NAME] table, the Python API): one declaration each, turned into the `CrossCoderConfig` and
`TrainingConfig` of the run once the number of steps and the sources are known.

Defaults that depend on the run's length: left unset, the learning-rate warm-up and the step at
which BatchTopK starts learning its threshold theta are the configs' defaults (1000 steps) capped
at a tenth of the run, so that a short run does not spend all its steps below the peak rate (a
46-step run under a 1000-step warm-up never exceeds 5% of `lr`). A value the user sets is kept,
with a one-line warning on stderr when it leaves the run no steps at the peak rate or no learned
threshold.
"""

import sys
from dataclasses import dataclass

from crosscoders.config import CrossCoderConfig, Source, TrainingConfig
from interp.options import DEVICE_HELP, default_of, model_dtype_option, option

SHORT_RUN_FRACTION = 10  # an unset warm-up / threshold start is at most 1/10 of the steps

# relu_l1 starts its decoder columns small (Minder et al.'s crosscoders: norm 0.005), the top-k
# kinds at unit norm
L1_DECODER_INIT_NORM = 0.005


@dataclass
class TrainOptions:
    dict_size: int = option(help="number of latents F", check="positive")
    k: int = option(
        default_of(CrossCoderConfig, "k"),
        help="latents per token (topk / batchtopk)",
        check="positive",
    )
    activation: str = option(
        default_of(CrossCoderConfig, "activation"), help="batchtopk | topk | relu_l1"
    )
    l1_coefficient: float = option(
        default_of(CrossCoderConfig, "l1_coefficient"),
        help="relu_l1 penalty mu (the paper's 0.041)",
        check="non_negative",
    )
    steps: int | None = option(None, help="optimizer steps (default: one epoch)", check="positive")
    batch_size: int = option(
        default_of(TrainingConfig, "batch_size"),
        help="tokens per optimizer step (global batch over all workers)",
        check="positive",
    )
    lr: float = option(
        default_of(TrainingConfig, "lr"), help="Adam learning rate", check="positive"
    )
    warmup_steps: int | None = option(
        None,
        help=f"linear lr warm-up steps (default: {default_of(TrainingConfig, 'warmup_steps')}, "
        "at most a tenth of the steps)",
        check="non_negative",
    )
    threshold_start_step: int | None = option(
        None,
        help="batchtopk: steps before theta is learned (default: "
        f"{default_of(CrossCoderConfig, 'threshold_start_step')}, at most a tenth of the steps)",
        check="non_negative",
    )
    dead_after_tokens: int = option(
        default_of(TrainingConfig, "dead_after_tokens"),
        help="tokens without firing = dead",
        check="positive",
    )
    decoder_init_norm: float | None = option(
        None,
        help=f"decoder column norm at init (default: 1.0; relu_l1: {L1_DECODER_INIT_NORM})",
        check="positive",
    )
    seed: int = option(default_of(TrainingConfig, "seed"), help="seed of init and data order")
    log_every: int = option(
        default_of(TrainingConfig, "log_every"), help="steps between log lines", check="positive"
    )
    checkpoint_every: int = option(
        default_of(TrainingConfig, "checkpoint_every"),
        help="steps between checkpoints",
        check="positive",
    )
    precision: str = option(
        default_of(TrainingConfig, "precision"),
        help="training arithmetic: auto (bf16 on CUDA, float32 elsewhere), float32, tf32, bf16",
    )

    def coder_config(self, n_steps: int, d_model: int, sources: list[Source]) -> CrossCoderConfig:
        """The dictionary's config over `sources` (one per input of the sources axis)."""
        if self.decoder_init_norm is not None:
            decoder_init_norm = self.decoder_init_norm
        elif self.activation == "relu_l1":
            decoder_init_norm = L1_DECODER_INIT_NORM
        else:
            decoder_init_norm = default_of(CrossCoderConfig, "decoder_init_norm")
        return CrossCoderConfig(
            n_sources=len(sources),
            d_model=d_model,
            dict_size=self.dict_size,
            activation=self.activation,
            k=self.k,
            l1_coefficient=self.l1_coefficient,
            threshold_start_step=self.resolved_threshold_start(n_steps),
            decoder_init_norm=decoder_init_norm,
            sources=sources,
        )

    def training_config(self, n_steps: int) -> TrainingConfig:
        return TrainingConfig(
            n_steps=n_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=self.resolved_warmup(n_steps),
            dead_after_tokens=self.dead_after_tokens,
            seed=self.seed,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            precision=self.precision,
        )

    def resolved_warmup(self, n_steps: int) -> int:
        """The warm-up of an `n_steps` run: as set (warning if the run ends inside it), else the
        default capped at a tenth of the run."""
        if self.warmup_steps is not None:
            if self.warmup_steps >= n_steps:
                _warn(
                    f"warmup_steps = {self.warmup_steps} >= the run's {n_steps} steps: the "
                    f"learning rate never reaches lr = {self.lr:g} (the run will underfit)"
                )
            return self.warmup_steps
        return min(default_of(TrainingConfig, "warmup_steps"), n_steps // SHORT_RUN_FRACTION)

    def resolved_threshold_start(self, n_steps: int) -> int:
        """The step at which BatchTopK starts learning theta: as set (warning if the run ends
        before it), else the default capped at a tenth of the run."""
        if self.threshold_start_step is not None:
            if self.activation == "batchtopk" and self.threshold_start_step >= n_steps:
                _warn(
                    f"threshold_start_step = {self.threshold_start_step} >= the run's {n_steps} "
                    "steps: theta is never learned during training (only calibrated at the end)"
                )
            return self.threshold_start_step
        default = default_of(CrossCoderConfig, "threshold_start_step")
        return min(default, n_steps // SHORT_RUN_FRACTION)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StreamSpec:
    """The stream options of `interp train crosscoder|sae` (those of `interp cache`, plus the
    model dtype and the buffer): `tokens` None = n_steps * batch_size, one epoch."""

    base: str = option(help="stream: base model spec")
    chat: str = option(help="stream: chat model spec")
    layers: str = option("0.5", help="stream: layers")
    mix: str = option("wiki:0.5,chat:0.5", help="stream: dataset mixture", check="mixture")
    tokens: int | None = option(
        None, help="stream: tokens of the plan (default: steps x batch size)", check="positive"
    )
    ctx: int = option(128, help="stream: tokens per text (context length)", check="positive")
    forward_batch: int = option(8, help="stream: texts per forward pass", check="positive")
    dtype: str = option(
        "bf16", help="stream: activation dtype, as a cache's", check="storage_dtype"
    )
    model_dtype: str = model_dtype_option(help_prefix="stream: ")
    buffer_batches: int = option(
        32, help="stream: shuffle buffer in batches (0 = plan order)", check="non_negative"
    )
    split: str = option("train", help="stream: dataset split")


@dataclass(kw_only=True)
class TrainControls:
    """How a training run runs, not what it learns (so not part of the configs): the options
    `interp train crosscoder|sae` and a [train.NAME] table share beside TrainOptions."""

    device: str = option(
        "auto", help=f"{DEVICE_HELP}; auto: each data-parallel worker its own GPU",
        check="device_or_auto",
    )  # fmt: skip
    workers: int = option(
        1, help="data-parallel processes (relaunches under torchrun)", check="positive"
    )
    overwrite: bool = option(False, help="replace a run with a different config in --out")
    log_to: str | None = option(
        None, help="also log to wandb (offline unless WANDB_MODE=online) or tensorboard"
    )


@dataclass(kw_only=True)
class SaeSourceOptions:
    """Which source an SAE reads (`interp train sae`, a [train.NAME] table with kind = "sae")."""

    model: str = option("base", help="which model of the cache: its role (base | chat)")
    layer: str | None = option(None, help="which cached layer (default: the only one)")
