"""The options of the steering commands (`interp steer train | eval`, a pipeline's [steer]
table), declared once each (interp.options.option): the CLI builds its options from these
dataclasses, a pipeline table is checked against them and built into them, and
steering.evaluate.evaluate_steering runs `steer eval` from them. No torch here."""

from dataclasses import dataclass

from interp.builtin_models import DEFAULT_PAIR
from interp.errors import InterpError
from interp.options import DEVICE_HELP, model_dtype_option, option

METHOD_NAMES = "lineas | mean-diff | linear-act | tuco | latents | amplification"


def parse_strengths(text: str) -> dict[str, list[float]]:
    """`lineas=0,0.5,1;mean-diff=0,2` -> {"lineas": [0, 0.5, 1], "mean-diff": [0, 2]}."""
    result: dict[str, list[float]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        method, _, values = part.partition("=")
        try:
            result[method.strip()] = [float(v) for v in values.split(",")]
        except ValueError:
            raise InterpError(
                f"bad strengths {part!r}: expected method=v1,v2,... e.g. lineas=0,0.5,1"
            ) from None
    return result


@dataclass
class LineasOptions:
    """The options of the `lineas` method (steering.lineas)."""

    steps: int = option(1000, help="LinEAS: optimisation steps", check="positive")
    lr: float = option(1e-3, help="LinEAS: Adam learning rate (cosine decay)", check="positive")
    sparsity: float = option(0.0, help="LinEAS: sparse group lasso gamma", check="non_negative")
    batch_size: int = option(
        0, help="LinEAS: source texts per optimisation step (0: all)", check="non_negative"
    )
    seed: int = option(0, help="LinEAS: seed of the minibatch draws")

    def method_options(self) -> dict:
        return {
            "steps": self.steps,
            "lr": self.lr,
            "sparsity": self.sparsity,
            "batch_size": self.batch_size or None,
            "seed": self.seed,
        }


@dataclass
class LatentOptions:
    """The options of the `latents` method (steering.latent_steering)."""

    crosscoder: str = option(
        "", help="latents: crosscoder folder (config.json + weights.safetensors)"
    )
    latents: str = option(
        "", help="latents: comma-separated latent ids (default: chosen by mean activation gap)"
    )
    n_latents: int = option(
        8, help="latents: how many latents to choose automatically", check="positive"
    )
    latent_mode: str = option(
        "clamp", help="latents: clamp (to the target mean) | add (the decoder directions)"
    )
    latent_source: str = option(
        "", help="latents: crosscoder source index or name (default: the steered model's)"
    )

    def method_options(self) -> dict:
        """`latent_source` is a source index or name ("" = automatic)."""
        try:
            ids = [int(part) for part in self.latents.split(",") if part.strip()]
        except ValueError:
            raise InterpError(f"bad latent ids {self.latents!r}: expected e.g. 12,345") from None
        source = self.latent_source.strip()
        return {
            "crosscoder": self.crosscoder,
            "latents": ids or None,
            "n_latents": self.n_latents,
            "mode": self.latent_mode,
            "source": int(source) if source.isdigit() else (source or None),
        }


@dataclass(kw_only=True)
class SteerEvalOptions:
    """`interp steer eval` / [steer] (beside LineasOptions and LatentOptions)."""

    tasks: str = option("remove-refusal,induce-refusal", help="comma-separated tasks")
    methods: str = option(
        "lineas,mean-diff,linear-act", help=f"comma-separated methods: {METHOD_NAMES}"
    )
    n: int = option(32, help="train texts per side (unpaired)", check="positive")
    n_eval: int = option(16, help="held-out prompts judged per strength", check="positive")
    n_perplexity: int = option(8, help="held-out wiki texts for perplexity", check="positive")
    max_new_tokens: int = option(24, help="greedy tokens per response", check="positive")
    ctx: int = option(64, help="truncate every input text to this many tokens", check="positive")
    strengths: str = option("", help="e.g. 'lineas=0,0.5,1;mean-diff=0,1,4'")
    pooling: str = option("mean", help="mean | last | tokens: samples per text")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
    overwrite: bool = option(False, help="replace a run folder made with another config")


@dataclass(kw_only=True)
class SteerTrainOptions:
    """`interp steer train` (beside LineasOptions and LatentOptions; run by
    steering.train_map.train_map)."""

    method: str = option("lineas", help=METHOD_NAMES)
    source: str = option(
        "", help="source texts: a dataset recipe or a .txt/.json file (tuco: none)"
    )
    target: str = option(
        "", help="target texts: a dataset recipe or a .txt/.json file (tuco: none)"
    )
    n: int = option(32, help="texts per side (unpaired)", check="positive")
    model: str = option("chat", help="the model to steer: base | chat")
    target_model: str = option("", help="model for the target activations (default: --model)")
    site: str = option("", help="post-norm | block | re:<regex> (default: the method's)")
    layers: str = option("", help="comma-separated layers, e.g. 3,-1,0.5 (default: method's)")
    pooling: str = option("mean", help="mean | last (one sample per text) | tokens")
    chat_template: bool = option(True, help="render texts as chat user turns")
    ctx: int = option(64, help="truncate texts to this many tokens", check="positive")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
    overwrite: bool = option(False, help="replace a map trained with another config")


@dataclass(kw_only=True)
class SteerGenerateOptions:
    """`interp steer generate MAP`."""

    prompt: list[str] | None = option(None, help="user message (repeatable)")
    strength: float = option(1.0, help="lambda (the multiplier for mean-diff, latents)")
    invert: bool = option(False, help="apply the inverse map (induce instead of remove)")
    model: str = option("chat", help="the model to steer: base | chat")
    max_new_tokens: int = option(40, help="greedy tokens per response", check="positive")
    base: str = option(DEFAULT_PAIR[0], help="base model spec")
    chat: str = option(DEFAULT_PAIR[1], help="chat model spec")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
