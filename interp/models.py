"""Loading models from specs and validating base/chat pairs.

A spec is a built-in name (`gemma-3-270m`, `gemma-3-270m-chat`, `smollm2-135m-instruct`), a
`.gguf` file, a local HF folder, or a Hugging Face id (needs the hub or its local cache).
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from interp.builtin_models import BUILTINS, DEFAULT_PAIR, GGUF_SOURCES, dequantized_folder
from interp.chat_template import GEMMA_CHAT_TEMPLATE
from interp.errors import InterpError


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


def _check_configs(
    base_spec: str, base: PretrainedConfig, chat_spec: str, chat: PretrainedConfig
) -> None:
    """The pair rule, part 1: same architecture family, d_model and n_layers."""
    checks = [
        ("architecture family", base.model_type, chat.model_type),
        ("d_model", base.hidden_size, chat.hidden_size),
        ("n_layers", base.num_hidden_layers, chat.num_hidden_layers),
    ]
    for what, left, right in checks:
        if left != right:
            raise InterpError(
                f"mismatched pair: {what} differs: "
                f"{base_spec!r} has {left}, {chat_spec!r} has {right}"
            )


def _check_tokenizers(base_spec: str, base: object, chat_spec: str, chat: object) -> None:
    """The pair rule, part 2: identical vocabularies (same tokens with the same ids)."""
    base_vocab, chat_vocab = base.get_vocab(), chat.get_vocab()
    if base_vocab != chat_vocab:
        differing = sorted(set(base_vocab.items()) ^ set(chat_vocab.items()), key=lambda kv: kv[1])
        raise InterpError(
            f"mismatched pair: tokenizers differ ({len(base_vocab)} vs {len(chat_vocab)} tokens; "
            f"first differing entry {differing[0]!r}): {base_spec!r} vs {chat_spec!r}"
        )


@dataclass(frozen=True)
class _Source:
    """Where a spec's files live: an HF folder or hub id (config, tokenizer, weights), and an
    optional LoRA adapter merged on top at load."""

    spec: str
    location: str
    adapter_dir: Path | None = None


def _source(spec: str) -> _Source:
    """Resolve a spec to its files; GGUFs are dequantized (once, cached) here."""
    if spec in BUILTINS:
        builtin = BUILTINS[spec]
        if builtin.base is None:
            gguf_path, sha = GGUF_SOURCES[spec]()
            return _Source(spec, str(dequantized_folder(gguf_path, sha)))
        adapter_dir = builtin.adapter_dir
        if adapter_dir is None or not (adapter_dir / "adapter_model.safetensors").exists():
            raise InterpError(
                f"built-in {spec!r} needs the chat-tune adapter in {adapter_dir}, which is "
                "missing: create it with `interp organism chat-tune`"
            )
        return _Source(spec, _source(builtin.base).location, adapter_dir)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InterpError(f"GGUF file {spec!r} does not exist: expected a path to a .gguf file")
        return _Source(spec, str(dequantized_folder(path)))
    return _Source(spec, str(path) if path.is_dir() else spec)


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


def _load_weights(
    source: _Source, tokenizer: object, dtype: torch.dtype, device: str
) -> LoadedModel:
    model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype)
    if source.adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(source.adapter_dir)).merge_and_unload()
    model.eval().to(device)
    return LoadedModel(spec=source.spec, model=model, tokenizer=tokenizer)


def load_model(spec: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load a causal LM by spec, in eval mode, with a chat template where the family has one."""
    source = _source(spec)
    tokenizer = _load_tokenizer(source, _load_config(source))
    return _load_weights(source, tokenizer, dtype, device)


def load_pair(
    base_spec: str = DEFAULT_PAIR[0],
    chat_spec: str = DEFAULT_PAIR[1],
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> ModelPair:
    """Load and validate a base/chat pair; with no arguments, the default built-in pair.

    The pair rule is checked on the configs, then on the tokenizers, before any weights are
    read, so a mismatched pair fails in seconds (a built-in GGUF whose dequantized cache is
    missing is still dequantized first: its config comes from that cache)."""
    base_source, chat_source = _source(base_spec), _source(chat_spec)
    base_config, chat_config = _load_config(base_source), _load_config(chat_source)
    _check_configs(base_spec, base_config, chat_spec, chat_config)
    base_tokenizer = _load_tokenizer(base_source, base_config)
    chat_tokenizer = _load_tokenizer(chat_source, chat_config)
    _check_tokenizers(base_spec, base_tokenizer, chat_spec, chat_tokenizer)
    return ModelPair(
        base=_load_weights(base_source, base_tokenizer, dtype, device),
        chat=_load_weights(chat_source, chat_tokenizer, dtype, device),
    )
