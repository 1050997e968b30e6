"""The options of the diffing commands (`interp analyze`, `diff-sae`, `adl`, `change-profile`,
`weights`, `horizon`, `amplify`), declared once each (interp.options.option): the CLI builds its
options from these dataclasses, a pipeline table is checked against them and built into them,
and crosscoders.diffing.commands runs a command from them. No torch here (`interp --help`).

What a pipeline sets itself (the run folder, the models, the layer) is not an option here: the
command takes it as an argument.
"""

from dataclasses import dataclass

from interp.errors import InterpError
from interp.options import DEVICE_HELP, model_dtype_option, option

OVERWRITE_HELP = "replace the results of another config"


def floats(text: str, name: str) -> list[float]:
    """`"0.5,1,2"` -> [0.5, 1.0, 2.0]; an empty string -> []."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InterpError(f"{name} {text!r}: expected comma-separated numbers") from None


def ints(text: str | None, name: str) -> list[int] | None:
    """`"0,2"` -> [0, 2]; None stays None (unset)."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InterpError(f"{name} {text!r}: expected comma-separated integers") from None


@dataclass(kw_only=True)
class AnalyzeOptions:
    """`interp analyze RUN` / [analyze]: crosscoders.diffing.run.AnalysisConfig plus the run's
    controls."""

    tokens: int | None = option(
        None, help="stream at most this many cache tokens", check="positive"
    )
    split: str = option(
        "all", help="cache split to stream: all | train | validation", check="cache_split"
    )
    batch_size: int = option(1024, help="tokens per batch of the cache passes", check="positive")
    n_prompts: int = option(
        16, help="held-out chat prompts for causal and token shift", check="positive"
    )
    max_new_tokens: int = option(
        32, help="greedy response length of the chat model", check="positive"
    )
    prompt_recipe: str = option("chat-benign", help="dataset recipe of the prompts")
    max_logit_latents: int = option(
        2048, help="latents whose decoder logits are stored", check="non_negative"
    )
    units: str | None = option(
        None,
        help="comma-separated subset of: latents, examples, decoder_views, causal, "
        "token_shift, report (default: all)",
    )
    overwrite: bool = option(
        False, help="redo units whose results exist / replace a changed config's"
    )
    seed: int = option(0, help="seed of the firing sample behind the quantile examples")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")


@dataclass(kw_only=True)
class DiffSaeOptions:
    """`interp diff-sae RUN` / [diff_sae]: the difference SAE's training and reading."""

    layer: int | None = option(None, help="cached layer (default: the only one)")
    dict_size: int = option(2048, help="latents", check="positive")
    k: int = option(32, help="BatchTopK: latents kept per token on average", check="positive")
    steps: int = option(300, help="training steps", check="positive")
    batch_size: int = option(512, help="tokens per step", check="positive")
    lr: float = option(5e-4, help="Adam learning rate", check="positive")
    warmup_steps: int = option(30, help="linear warm-up steps", check="non_negative")
    n_latents: int = option(50, help="top latents read (logit lens, examples)", check="positive")
    n_examples: int = option(20, help="max-activating examples per top latent", check="positive")
    seed: int = option(0, help="data order and initialisation")
    model_dtype: str = model_dtype_option()
    overwrite: bool = option(False, help="replace a dictionary of another config")


@dataclass(kw_only=True)
class AdlOptions:
    """`interp adl` / [adl]: crosscoders.diffing.adl.AdlConfig as command-line text."""

    n_texts: int = option(2000, help="unrelated texts averaged", check="positive")
    positions: int = option(
        5, help="k: the first k positions, each read separately", check="positive"
    )
    norm_positions: int = option(
        5, help="positions after k giving the typical norm", check="positive"
    )
    recipe: str = option("wiki", help="dataset recipe of the unrelated texts")
    split: str = option("train", help="split of that recipe")
    batch_size: int = option(32, help="texts per forward pass", check="positive")
    top_tokens: int = option(20, help="tokens kept per reading", check="positive")
    patchscope_scales: str = option("0.5,1,2", help="multiples of the typical norm")
    steer_strengths: str = option("0.5,1,2", help="multiples of the typical norm")
    steer_positions: str | None = option(None, help="positions steered with (default: all k)")
    steer_models: str = option("chat,base", help="models steered")
    n_prompts: int = option(8, help="neutral prompts generated from", check="positive")
    max_new_tokens: int = option(32, help="greedy tokens per generation", check="positive")
    tuco_alphas: str = option("2", help="TuCo amplification alphas ('' for none)")
    model_dtype: str = model_dtype_option()
    seed: int = option(0, help="shuffle of the unrelated texts")
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


@dataclass(kw_only=True)
class ChangeProfileOptions:
    """`interp change-profile RUN` / [profile]."""

    n_texts: int = option(
        64, help="held-out wiki texts of the pass over every layer", check="positive"
    )
    n_chats: int = option(
        64, help="held-out chat-tune conversations of that pass", check="non_negative"
    )
    ctx: int = option(64, help="tokens per document", check="positive")
    batch_size: int = option(8, help="documents per forward pass", check="positive")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")


@dataclass(kw_only=True)
class WeightsOptions:
    """`interp weights` / [weights]: crosscoders.diffing.weights.WeightsConfig and its source."""

    adapter: str = option("", help="a LoRA adapter folder: read unmerged instead of --chat")
    intruder_k: int = option(10, help="top-k singular vectors", check="positive")
    epsilon: float = option(0.5, help="intruder cosine threshold", check="positive")
    top_r: int = option(8, help="energy share in the top r", check="positive")
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


@dataclass(kw_only=True)
class HorizonOptions:
    """`interp horizon` / [horizon]: crosscoders.diffing.horizon.HorizonConfig and its prompts."""

    recipe: str = option("chat-benign", help="dataset recipe of the prompts (heldout)")
    n_prompts: int = option(16, help="prompts", check="positive")
    max_new_tokens: int = option(32, help="tokens generated", check="positive")
    first_k: int = option(4, help="'first' response tokens", check="positive")
    sample: bool = option(False, help="sample at temperature 1 instead of greedy")
    seed: int = option(0, help="sampling seed")
    batch_size: int = option(16, help="prompts per batch", check="positive")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


@dataclass(kw_only=True)
class AmplifyOptions:
    """`interp amplify` / [amplify]: crosscoders.diffing.amplify.AmplifyConfig."""

    alphas: str = option("2,4", help="alphas (0 and 1 are always added)")
    n_prompts: int = option(12, help="neutral prompts", check="positive")
    max_new_tokens: int = option(32, help="greedy tokens", check="positive")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


@dataclass(kw_only=True)
class ScienceOptions:
    """`interp evaluate-diffing PROFILE` (crosscoders.diffing.science.evaluate)."""

    organisms: str | None = option(None, help="comma-separated organisms (default: all)")
    score_only: bool = option(False, help="only score the results already there")
    max_nll: float = option(
        5.0, help="steered generations above this NLL are incoherent", check="positive"
    )
    min_distinct: float = option(
        0.5,
        help="steered generations below this distinct-trigram ratio are degenerate",
        check="non_negative",
    )
    model_dtype: str = model_dtype_option()
