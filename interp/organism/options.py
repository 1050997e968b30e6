"""The options of `interp organism chat-tune | card | narrow | narrow-card`, declared once each
(interp.options.option): the CLI builds its options from these dataclasses. No torch here."""

from dataclasses import dataclass
from pathlib import Path

from interp.options import DEVICE_HELP, model_dtype_option, option
from interp.organism.config import DEFAULT_OUTPUT

DEFAULT_CHECKPOINT = Path("runs/chat-tune/checkpoint")
DEFAULT_NARROW_CHECKPOINT = Path("runs/narrow/checkpoint")
CONFIG_HELP = "a config.json to use instead of the defaults"
OVERWRITE_HELP = "replace an adapter made with a different config"


@dataclass(kw_only=True)
class ChatTuneOptions:
    out: Path = option(DEFAULT_OUTPUT, help="where the adapter and its card go")
    checkpoint_dir: Path = option(DEFAULT_CHECKPOINT, help="resumable training state")
    config: Path | None = option(None, help=CONFIG_HELP)
    data_only: bool = option(False, help="only build the teacher data and conversations")
    overwrite: bool = option(False, help=OVERWRITE_HELP)
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")


@dataclass(kw_only=True)
class CardOptions:
    out: Path = option(DEFAULT_OUTPUT, help="the chat-tune folder (card.json, README.md)")
    n_prompts: int = option(50, help="held-out prompts per set", check="positive")
    max_new_tokens: int = option(48, help="length cap of the greedy responses", check="positive")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")


@dataclass(kw_only=True)
class NarrowOptions:
    out: Path | None = option(None, help="where the adapter goes")
    checkpoint_dir: Path = option(DEFAULT_NARROW_CHECKPOINT, help="resumable training state")
    config: Path | None = option(None, help=CONFIG_HELP)
    overwrite: bool = option(False, help=OVERWRITE_HELP)
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")


@dataclass(kw_only=True)
class NarrowCardOptions:
    out: Path | None = option(None, help="the organism's folder (config.json, adapter)")
    spec: str = option("gemma-3-270m-astronomy", help="the model spec that loads it")
    max_new_tokens: int = option(32, help="length of the continuations")
    n_wiki: int = option(40, help="held-out wiki summaries per perplexity")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
