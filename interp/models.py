"""Loading models from specs and validating base/chat pairs.

A spec is a built-in name (`gemma-3-270m`, `gemma-3-270m-chat`, `smollm2-135m-instruct`), a
`.gguf` file, a local HF folder, or a Hugging Face id (needs the hub or its local cache).

Order of work, so that a bad spec or a mismatched pair costs seconds and one line: resolve each
spec (no weights), check the pair on configs and GGUF headers, only then dequantize GGUFs on first
use (one line on stderr) and load weights.
"""

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from interp.builtin_models import (
    BUILTINS,
    DEFAULT_PAIR,
    GGUF_SOURCES,
    dequantized_cache_folder,
    dequantized_folder,
    gguf_sha256,
    is_prepared,
    progress_bars_on_a_terminal_only,
    sha256_file,
)
from interp.chat_template import GEMMA_CHAT_TEMPLATE
from interp.errors import InterpError
from interp.gguf_header import GGUFHeader, read_gguf_header


@dataclass
class LoadedModel:
    """An HF causal LM with its tokenizer and the spec it came from."""

    spec: str
    model: PreTrainedModel
    tokenizer: object

    @property
    def family(self) -> str:
        return str(self.model.config.model_type)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype its weights were loaded in (--model-dtype, resolved)."""
        return next(self.model.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass
class ModelPair:
    """A validated base/chat pair: same family, d_model, n_layers and tokenizer."""

    base: LoadedModel
    chat: LoadedModel

    def __post_init__(self) -> None:
        validate_pair(self.base, self.chat)

    @property
    def tokenizer(self):
        return self.chat.tokenizer

    @property
    def d_model(self) -> int:
        return self.base.d_model

    @property
    def n_layers(self) -> int:
        return self.base.n_layers

    def __iter__(self):
        return iter((self.base, self.chat))


def validate_pair(base: LoadedModel, chat: LoadedModel) -> None:
    """Raise an InterpError naming the first mismatch between the two models."""
    _check_configs(base.spec, base.model.config, chat.spec, chat.model.config)
    _check_tokenizers(base.spec, base.tokenizer, chat.spec, chat.tokenizer)


@dataclass(frozen=True)
class _Shape:
    """The config part of the pair rule, from an HF config or from a GGUF header."""

    family: str
    d_model: int
    n_layers: int

    @classmethod
    def of_config(cls, config: PretrainedConfig) -> "_Shape":
        return cls(str(config.model_type), config.hidden_size, config.num_hidden_layers)

    @classmethod
    def of_header(cls, header: GGUFHeader) -> "_Shape":
        return cls(header.family, header.d_model, header.n_layers)


def _check_shapes(base_spec: str, base: _Shape, chat_spec: str, chat: _Shape) -> None:
    """The pair rule, part 1: same architecture family, d_model and n_layers."""
    checks = [
        ("architecture family", base.family, chat.family),
        ("d_model", base.d_model, chat.d_model),
        ("n_layers", base.n_layers, chat.n_layers),
    ]
    for what, left, right in checks:
        if left != right:
            raise InterpError(
                f"mismatched pair: {what} differs: "
                f"{base_spec!r} has {left}, {chat_spec!r} has {right}"
            )


def _check_configs(
    base_spec: str, base: PretrainedConfig, chat_spec: str, chat: PretrainedConfig
) -> None:
    _check_shapes(base_spec, _Shape.of_config(base), chat_spec, _Shape.of_config(chat))


def _check_vocabularies(
    base_spec: str, base_vocab: dict[str, int], chat_spec: str, chat_vocab: dict[str, int]
) -> None:
    """The pair rule, part 2: identical vocabularies (same tokens with the same ids)."""
    if base_vocab != chat_vocab:
        differing = sorted(set(base_vocab.items()) ^ set(chat_vocab.items()), key=lambda kv: kv[1])
        raise InterpError(
            f"mismatched pair: tokenizers differ ({len(base_vocab)} vs {len(chat_vocab)} tokens; "
            f"first differing entry {differing[0]!r}): {base_spec!r} vs {chat_spec!r}"
        )


def _check_tokenizers(base_spec: str, base: object, chat_spec: str, chat: object) -> None:
    _check_vocabularies(base_spec, base.get_vocab(), chat_spec, chat.get_vocab())


@dataclass(frozen=True)
class _Source:
    """Where a spec's files live: `location` is an HF folder or hub id (config, tokenizer,
    weights), or None for a GGUF not dequantized yet (`gguf`, whose header stands in for the
    config and tokenizer until `_prepared` dequantizes it); `adapter_dir` is a LoRA adapter
    merged on top at load; `name` is what the first-use line calls the weights."""

    spec: str
    location: str | None
    adapter_dir: Path | None = None
    gguf: Path | None = None
    gguf_sha: str | None = None
    name: str = ""


def _source(spec: str) -> _Source:
    """Resolve a spec to its files without reading any weights (a built-in Gemma GGUF is
    assembled from its packages here, once: a file copy of seconds)."""
    if spec in BUILTINS:
        builtin = BUILTINS[spec]
        if builtin.base is None:
            return _gguf_source(spec, spec, GGUF_SOURCES[spec], gguf_sha256(spec))
        adapter_dir = builtin.adapter_dir
        if adapter_dir is None or not (adapter_dir / "adapter_model.safetensors").exists():
            raise InterpError(
                f"built-in {spec!r} needs the chat-tune adapter in {adapter_dir}, which is "
                "missing: create it with `interp organism chat-tune`"
            )
        return replace(_source(builtin.base), spec=spec, adapter_dir=adapter_dir)
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return _adapter_source(spec, path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InterpError(f"GGUF file {spec!r} does not exist: expected a path to a .gguf file")
        sha = sha256_file(path)
        return _gguf_source(spec, path.name, lambda: (path, sha), sha)
    if path.is_dir():
        return _Source(spec, str(path))
    return _Source(spec, _hub_id(spec))


def _adapter_source(spec: str, folder: Path) -> _Source:
    """A PEFT LoRA adapter folder: the base its adapter_config.json names (a built-in, a local
    folder or a hub id), with the adapter merged on top at load."""
    try:
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InterpError(
            f"adapter folder {spec!r}: adapter_config.json has no base_model_name_or_path: "
            "expected a PEFT LoRA adapter"
        ) from None
    if not (folder / "adapter_model.safetensors").is_file():
        raise InterpError(
            f"adapter folder {spec!r} has no adapter_model.safetensors: expected a PEFT LoRA "
            "adapter"
        )
    if not isinstance(base, str) or Path(base).expanduser().resolve() == folder.resolve():
        raise InterpError(f"adapter folder {spec!r} names no usable base model ({base!r})")
    return replace(_source(base), spec=spec, adapter_dir=folder)


def _gguf_source(
    spec: str, name: str, locate: Callable[[], tuple[Path, str]], sha: str | None
) -> _Source:
    if sha is not None and is_prepared(dequantized_cache_folder(sha)):
        return _Source(spec, str(dequantized_cache_folder(sha)))
    gguf_path, sha = locate()
    return _Source(spec, None, gguf=gguf_path, gguf_sha=sha, name=name)


def _prepared(source: _Source) -> _Source:
    """The source with its GGUF dequantized (once, into the user cache; one line says so)."""
    if source.location is not None:
        return source
    folder = dequantized_folder(source.gguf, source.gguf_sha, source.name)
    return replace(source, location=str(folder), gguf=None)


def _not_found(spec: str, why: str) -> InterpError:
    return InterpError(
        f"cannot load model {spec!r}: not a built-in ({', '.join(BUILTINS)}), an existing .gguf "
        f"file or local HF folder, {why}"
    )


def _hub_id(spec: str) -> str:
    """A Hugging Face id, checked without the slow path: found in the local HF cache, or known
    to the hub (one request, no retries). Otherwise one line says what is missing, instead of
    transformers' retries of a hub that cannot be reached."""
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or not spec.strip():
        raise _not_found(spec, "nor a Hugging Face id (org/name): no such file or folder")
    from huggingface_hub import constants, model_info
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
    )

    try:
        AutoConfig.from_pretrained(spec, local_files_only=True)
        return spec  # in the local HF cache
    except (OSError, ValueError):
        pass
    if constants.HF_HUB_OFFLINE:
        raise _not_found(
            spec,
            "nor in the local Hugging Face cache (HF_HUB_OFFLINE is set: the hub is not asked)",
        )
    try:
        model_info(spec, timeout=10)
    except GatedRepoError:
        return spec  # gated: the real loading says what access it needs
    except (RepositoryNotFoundError, HFValidationError):
        raise _not_found(
            spec, f"nor a model on the Hugging Face hub ({constants.ENDPOINT})"
        ) from None
    except Exception as error:  # no network, DNS, proxy, timeout: the hub cannot be asked
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise _not_found(
            spec,
            f"nor in the local Hugging Face cache, and the hub ({constants.ENDPOINT}) is needed "
            f"to download it but cannot be reached ({first_line})",
        ) from None
    return spec


def _cannot_load(source: _Source, error: Exception) -> InterpError:
    first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
    return InterpError(
        f"cannot load model {source.spec!r}: not a built-in ({', '.join(BUILTINS)}), a .gguf "
        f"file, a local HF folder, or a Hugging Face id reachable offline ({first_line})"
    )


def _load_config(source: _Source) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(source.location)
    except (OSError, ValueError) as error:
        raise _cannot_load(source, error) from None


def _load_tokenizer(source: _Source, config: PretrainedConfig) -> object:
    """The tokenizer, with the adapter's chat template, or Gemma's where a Gemma has none."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location)
    except (OSError, ValueError) as error:
        raise _cannot_load(source, error) from None
    if source.adapter_dir is not None and (source.adapter_dir / "chat_template.jinja").exists():
        tokenizer.chat_template = (source.adapter_dir / "chat_template.jinja").read_text()
    if getattr(tokenizer, "chat_template", None) is None and config.model_type.startswith("gemma"):
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer


def model_dtype(name: "str | torch.dtype", device: "str | torch.device") -> torch.dtype:
    """The dtype models load in. `auto`: bfloat16 on CUDA (tensor-core matmuls; the cache stores
    bf16 by default anyway), float32 elsewhere (the CPU reference numbers of this project);
    otherwise bf16, fp16, fp32 in either spelling (bfloat16, float16, float32)."""
    # the one table of dtype names (imported here: interp.cache imports this module)
    from interp.cache.config import STORAGE_DTYPES, canonical_dtype

    if isinstance(name, torch.dtype):
        return name
    if name.lower() == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return STORAGE_DTYPES[canonical_dtype(name)]
    except InterpError:
        raise InterpError(
            f"unknown model dtype {name!r}: expected auto, bf16, fp16 or fp32 "
            "(or bfloat16, float16, float32)"
        ) from None


# a models' dtype as run records name it (the names --model-dtype lists, so that a refusal can say
# what to pass): the cache manifest, a streamed run's stream.json, an analysis' or ADL's config
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# what a record without `model_dtype` ran its models in: every model loaded in float32 before
# --model-dtype existed (so a resume of such a run in bf16 is refused, not mixed)
RECORDED_BEFORE_MODEL_DTYPE = "fp32"
# what guard_config(recorded_before=) reads a config without `model_dtype` as
MODEL_DTYPE_RECORDED_BEFORE = {"model_dtype": RECORDED_BEFORE_MODEL_DTYPE}


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def attention_implementation(config: PretrainedConfig) -> str | None:
    """PyTorch's fused attention (`sdpa`) wherever the architecture's transformers class has it;
    `eager` where the config soft-caps the attention logits (Gemma 2), which SDPA cannot express:
    transformers 5.17's Gemma 2 class claims SDPA and its SDPA path drops the `softcap` it is
    given; None (transformers' own choice) elsewhere."""
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "eager"
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else None


def _load_weights(
    source: _Source,
    config: PretrainedConfig,
    tokenizer: object,
    dtype: "str | torch.dtype",
    device: "str | torch.device",
) -> LoadedModel:
    attention = attention_implementation(config)
    with progress_bars_on_a_terminal_only():
        model = AutoModelForCausalLM.from_pretrained(
            source.location,
            dtype=model_dtype(dtype, device),
            **({"attn_implementation": attention} if attention else {}),
        )
    if source.adapter_dir is not None:
        from peft import PeftModel

        with warnings.catch_warnings():  # peft asks the deprecated property on every load
            warnings.filterwarnings(
                "ignore",
                message="`is_gradient_checkpointing` is deprecated",
                category=FutureWarning,
            )
            model = PeftModel.from_pretrained(model, str(source.adapter_dir)).merge_and_unload()
    model.eval().to(device)
    return LoadedModel(spec=source.spec, model=model, tokenizer=tokenizer)


def load_model(
    spec: str, dtype: "str | torch.dtype" = torch.float32, device: str = "cpu"
) -> LoadedModel:
    """Load a causal LM by spec, in eval mode, with a chat template where the family has one.
    `dtype` is a torch dtype or a name `model_dtype` knows (`auto`: bf16 on CUDA, else fp32)."""
    source = _prepared(_source(spec))
    config = _load_config(source)
    tokenizer = _load_tokenizer(source, config)
    return _load_weights(source, config, tokenizer, dtype, device)


def _check_before_preparing(base: _Source, chat: _Source) -> None:
    """The pair rule on what costs no weights: configs of HF folders, headers of GGUFs that are
    not dequantized yet (family, d_model, n_layers; and the tokens when both are such GGUFs:
    a GGUF's token list is not spelled like the HF vocabulary made from it, e.g. Gemma's
    multi-space tokens, so a GGUF/HF tokenizer pair is compared once prepared)."""
    headers: dict[Path, GGUFHeader] = {}
    for source in (base, chat):
        if source.location is None and source.gguf not in headers:
            headers[source.gguf] = read_gguf_header(source.gguf)

    def shape(source: _Source) -> _Shape:
        if source.location is None:
            return _Shape.of_header(headers[source.gguf])
        return _Shape.of_config(_load_config(source))

    _check_shapes(base.spec, shape(base), chat.spec, shape(chat))
    if base.location is None and chat.location is None:
        _check_vocabularies(
            base.spec, headers[base.gguf].vocab, chat.spec, headers[chat.gguf].vocab
        )


def load_pair(
    base_spec: str = DEFAULT_PAIR[0],
    chat_spec: str = DEFAULT_PAIR[1],
    dtype: "str | torch.dtype" = torch.float32,
    device: str = "cpu",
) -> ModelPair:
    """Load and validate a base/chat pair; with no arguments, the default built-in pair.

    The pair rule is checked before any weights are read or dequantized: on configs and GGUF
    headers first (a mismatched pair fails in seconds, on a cold user cache too), then on the
    real configs and tokenizers once GGUFs are prepared. `dtype` as in `load_model`."""
    base_source, chat_source = _source(base_spec), _source(chat_spec)
    _check_before_preparing(base_source, chat_source)
    base_source, chat_source = _prepared(base_source), _prepared(chat_source)
    base_config, chat_config = _load_config(base_source), _load_config(chat_source)
    _check_configs(base_spec, base_config, chat_spec, chat_config)
    base_tokenizer = _load_tokenizer(base_source, base_config)
    chat_tokenizer = _load_tokenizer(chat_source, chat_config)
    _check_tokenizers(base_spec, base_tokenizer, chat_spec, chat_tokenizer)
    return ModelPair(
        base=_load_weights(base_source, base_config, base_tokenizer, dtype, device),
        chat=_load_weights(chat_source, chat_config, chat_tokenizer, dtype, device),
    )


def load_pair_in(base_spec: str, chat_spec: str, dtype: str, device: str = "auto") -> ModelPair:
    """`load_pair` with the dtype and device as options give them: `auto`, bf16, fp16, fp32 in
    either spelling (model_dtype) and `auto` for the device (interp.device.resolve_device)."""
    from interp.device import resolve_device

    device = resolve_device(device)
    return load_pair(base_spec, chat_spec, dtype=model_dtype(dtype, device), device=device)
