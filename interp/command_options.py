"""The options of interp's own commands (`interp cache`, `interp tuco ...`, `interp compare`,
`interp app`, `interp run`, `interp demo`) and of `interp dict export|import`, declared once
each (interp.options.option): the CLI builds its options from these dataclasses, a pipeline
table ([cache], [tuco]) is checked against them and built into them, and the Python API
constructs them. No torch here (`interp --help`). What a pipeline sets itself (models, layers,
output folder) is an argument of the function that runs the command, not an option here."""

from dataclasses import dataclass
from pathlib import Path

from interp.builtin_models import DEFAULT_PAIR
from interp.options import DEVICE_HELP, model_dtype_option, option


@dataclass(kw_only=True)
class CacheOptions:
    """`interp cache` / [cache] (run by interp.cache.command.cache_activations)."""

    mix: str = option(
        "wiki:0.5,chat:0.5", help="dataset mixture, recipe:token share", check="mixture"
    )
    tokens: int = option(100_000, help="number of tokens to cache", check="positive")
    ctx: int = option(128, help="context length (documents are truncated)", check="positive")
    batch_size: int = option(8, help="sequences per forward pass", check="positive")
    dtype: str = option("bf16", help="storage dtype: bf16, fp16 or fp32", check="storage_dtype")
    model_dtype: str = model_dtype_option()
    seed: int = option(0, help="seed of the document order")
    keep_special: bool = option(False, help="also cache BOS/PAD tokens")
    shard_tokens: int | None = option(
        None, help="tokens per shard (default ~128 MiB)", check="positive"
    )
    split: str = option("train", help="dataset split to read")
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
    workers: int = option(
        1, help="processes (torch.distributed, gloo); or use torchrun", check="positive"
    )
    overwrite: bool = option(False, help="replace a cache of another config in --out")


@dataclass(kw_only=True)
class TucoExperimentOptions:
    """`interp tuco experiments` / [tuco] (run by interp.tuco_experiments.tuco_experiments)."""

    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")
    n_prompts: int = option(
        32, help="prompts per set (benign, harmful, jailbreak)", check="positive"
    )
    batch_size: int = option(8, help="prompts per forward pass / generate call", check="positive")
    n_samples: int = option(8, help="sampled completions per jailbreak", check="positive")
    max_new_tokens: int = option(30, help="tokens per completion", check="positive")
    min_non_refusals: int = option(
        2, help="jailbreak success: at least this many", check="non_negative"
    )
    alpha: list[float] | None = option(
        None,
        help="alpha grid, repeatable (default: the paper's .75 .9 .95 1 1.05 1.1 1.25; "
        "other values are flagged extra in the outputs)",
    )
    max_prompt_tokens: int = option(512, help="skip longer (jailbreak) prompts", check="positive")
    seed: int = option(0, help="sampling seed")
    overwrite: bool = option(False, help="replace results of a different config")


@dataclass(kw_only=True)
class TucoPairOptions:
    """The pair of `interp tuco score | generate | experiments` and how it loads."""

    base: str = option(DEFAULT_PAIR[0], help="pre-trained model spec (built-in, folder, HF id)")
    chat: str = option(DEFAULT_PAIR[1], help="fine-tuned model spec")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")


@dataclass(kw_only=True)
class TucoScoreOptions:
    """`interp tuco score`."""

    prompt: list[str] = option(help="user message (repeatable)", flags=("--prompt", "-p"))
    batch_size: int = option(8, help="prompts per forward pass", check="positive")
    per_token: bool = option(False, help="also print TuCo at every token")


@dataclass(kw_only=True)
class TucoGenerateOptions:
    """`interp tuco generate`."""

    prompt: str = option(help="user message", flags=("--prompt", "-p"))
    alpha: list[float] | None = option(
        None, help="scale(s) of the fine-tuning component [0, 1] (default: 0 and 1)"
    )
    max_new_tokens: int = option(40, help="tokens to generate", check="positive")


@dataclass(kw_only=True)
class CompareOptions:
    """`interp compare`."""

    prompt: str = option("What is the capital of France?", help="user message")
    base: str = option(DEFAULT_PAIR[0], help="base model spec")
    chat: str = option(DEFAULT_PAIR[1], help="chat model spec")
    top: int = option(5, help="how many next tokens to show", check="positive")
    model_dtype: str = model_dtype_option()
    device: str = option("auto", help=DEVICE_HELP, check="resolved_device")


@dataclass(kw_only=True)
class AppOptions:
    """`interp app RUN_FOLDER` (run by interp.app_launch.serve_app)."""

    port: int = option(8501, help="port to serve on", check="port")
    host: str = option("127.0.0.1", help="address to bind (0.0.0.0 exposes the app)")


@dataclass(kw_only=True)
class RunOptions:
    """`interp run CONFIG` (run by interp.cli.pipeline_cmd.run_pipeline_file)."""

    out: Path | None = option(None, help="run folder (overrides [run] out)", check="output_folder")
    steps: str | None = option(None, help="comma-separated steps, e.g. cache,train or train.l1")


@dataclass(kw_only=True)
class DemoOptions:
    """`interp demo` (run by interp.cli.pipeline_cmd.demo_pipeline)."""

    full: bool = option(
        False,
        help="quick: <= 20 min on a 2-core CPU; full: the paper-scale profile, meant for a GPU",
        flags=("--full/--quick",),
    )
    out: Path | None = option(None, help="run folder", check="output_folder")
    no_app: bool = option(False, help="do not start the app at the end", flags=("--no-app",))
    port: int = option(8501, help="port of the app", check="port")


@dataclass(kw_only=True)
class DictExportOptions:
    """`interp dict export DICTIONARY` (run by crosscoders.export_saelens.export_dictionary)."""

    out: Path = option(help="output folder (rerun to resume)", check="output_folder")
    source: str = option(
        "0", help="which source: its name (base, chat; base/9 with several layers) or index"
    )
    cache: Path | None = option(
        None, help="the dictionary's activation cache: its ctx is cfg.json's context_size"
    )
    context_size: int | None = option(
        None, help="context size for cfg.json (or --cache)", check="positive"
    )


@dataclass(kw_only=True)
class DictImportOptions:
    """`interp dict import PATH` (run by
    crosscoders.import_dictionary_learning.import_dictionary)."""

    out: Path = option(help="output folder (rerun to resume)", check="output_folder")
    model: list[str] | None = option(
        None, help="dictionary_learning: the model of each layer, in order (base, chat)"
    )
    layer: int | None = option(None, help="dictionary_learning: the resid_post layer they read")
