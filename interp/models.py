"""Loading models from specs and validating base/chat pairs.

A spec is a built-in name (`gemma-3-270m`, `gemma-3-270m-chat`, `smollm2-135m-instruct`), a
`.gguf` file, a local HF folder, or a Hugging Face id (needs the hub or its local cache).
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

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
    checks = [
        ("architecture family", base.family, chat.family),
        ("d_model", base.d_model, chat.d_model),
        ("n_layers", base.n_layers, chat.n_layers),
    ]
    for what, left, right in checks:
        if left != right:
            raise InterpError(
                f"mismatched pair: {what} differs: {base.spec!r} has {left}, {chat.spec!r} has {right}"
            )
    base_vocab, chat_vocab = base.tokenizer.get_vocab(), chat.tokenizer.get_vocab()
    if base_vocab != chat_vocab:
        differing = sorted(set(base_vocab.items()) ^ set(chat_vocab.items()), key=lambda kv: kv[1])
        raise InterpError(
            f"mismatched pair: tokenizers differ ({len(base_vocab)} vs {len(chat_vocab)} tokens; "
            f"first differing entry {differing[0]!r}): {base.spec!r} vs {chat.spec!r}"
        )


def _ensure_chat_template(tokenizer, family: str) -> None:
    if getattr(tokenizer, "chat_template", None) is None and family.startswith("gemma"):
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE


def _from_folder_or_id(source: str | Path, dtype: torch.dtype) -> tuple[PreTrainedModel, object]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as error:
        raise InterpError(
            f"cannot load model {str(source)!r}: not a built-in ({', '.join(BUILTINS)}), a .gguf "
            f"file, a local HF folder, or a Hugging Face id reachable offline ({error})"
        ) from None
    return model, tokenizer


def _load_builtin(name: str, dtype: torch.dtype) -> tuple[PreTrainedModel, object]:
    builtin = BUILTINS[name]
    if builtin.base is not None:
        return _load_with_adapter(builtin.base, builtin.adapter_dir, name, dtype)
    gguf_path, sha = GGUF_SOURCES[name]()
    return _from_folder_or_id(dequantized_folder(gguf_path, sha), dtype)


def _load_with_adapter(
    base_name: str, adapter_dir: Path | None, name: str, dtype: torch.dtype
) -> tuple[PreTrainedModel, object]:
    if adapter_dir is None or not (adapter_dir / "adapter_model.safetensors").exists():
        raise InterpError(
            f"built-in {name!r} needs the chat-tune adapter in {adapter_dir}, which is missing: "
            "create it with `interp organism chat-tune`"
        )
    from peft import PeftModel

    model, tokenizer = _load_builtin(base_name, dtype)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    template = adapter_dir / "chat_template.jinja"
    if template.exists():
        tokenizer.chat_template = template.read_text()
    return model, tokenizer


def load_model(spec: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load a causal LM by spec, in eval mode, with a chat template where the family has one."""
    path = Path(spec).expanduser()
    if spec in BUILTINS:
        model, tokenizer = _load_builtin(spec, dtype)
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise InterpError(f"GGUF file {spec!r} does not exist")
        model, tokenizer = _from_folder_or_id(dequantized_folder(path), dtype)
    else:
        model, tokenizer = _from_folder_or_id(path if path.is_dir() else spec, dtype)
    model.eval().to(device)
    _ensure_chat_template(tokenizer, str(model.config.model_type))
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer)


def load_pair(
    base_spec: str = DEFAULT_PAIR[0],
    chat_spec: str = DEFAULT_PAIR[1],
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> ModelPair:
    """Load and validate a base/chat pair; with no arguments, the default built-in pair."""
    base = load_model(base_spec, dtype=dtype, device=device)
    chat = load_model(chat_spec, dtype=dtype, device=device)
    return ModelPair(base=base, chat=chat)
