"""Tiny random models built from configs, with a word-level tokenizer, for fast unit tests.

`tiny_model(family, seed)` gives a `LoadedModel`; `tiny_pair()` two models of the same config and
tokenizer with different weights (a stand-in for base/chat); `save_tiny(loaded, folder)` writes an
HF folder so that specs given as paths (CLI tests) load it; `loaded_dtypes(monkeypatch)` records
the dtype of every model loaded after it.
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from interp.chat_template import GEMMA_CHAT_TEMPLATE
from interp.models import LoadedModel, ModelPair

VOCAB_SIZE = 96
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
WORDS = ["user", "model", "\n"] + [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIAL_TOKENS) - 3)]

COMMON = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)
CONFIGS = {
    "llama": lambda: LlamaConfig(**COMMON),
    "qwen2": lambda: Qwen2Config(**COMMON),
    "gemma2": lambda: Gemma2Config(**COMMON, head_dim=8, sliding_window=16),
    "gemma3": lambda: Gemma3TextConfig(
        **COMMON,
        head_dim=8,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"] * 2,
    ),
}
FAMILIES = tuple(CONFIGS)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer


def tiny_model(family: str = "gemma3", seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    config.architectures = None
    model = AutoModelForCausalLM.from_config(config).eval()
    model.config.architectures = [type(model).__name__]
    return LoadedModel(spec=f"tiny-{family}-{seed}", model=model, tokenizer=tiny_tokenizer())


def tiny_pair(family: str = "gemma3") -> ModelPair:
    """Same config and tokenizer, different weights: chat = base + small perturbation (like a
    fine-tune), so that the two streams are close but not equal."""
    base = tiny_model(family, seed=0)
    chat = tiny_model(family, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in chat.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    chat.spec = f"tiny-{family}-chat"
    return ModelPair(base=base, chat=chat)


def save_tiny(loaded: LoadedModel, folder: Path) -> Path:
    """Write an HF folder (config, safetensors, tokenizer) that `load_model(str(folder))` loads."""
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def save_tiny_gemma_pair_with_real_tokenizer(folder: Path) -> tuple[str, str]:
    """Two 4-block random Gemma 3 models (seeds 0 and 1) with the real Gemma tokenizer and chat
    template (so real text and chat tokenize as on the default pair), saved as HF folders
    `folder/base` and `folder/chat`; returns their paths. Needs the bundled Gemma package."""
    from interp.builtin_models import dequantized_folder, gemma_3_270m_gguf

    tokenizer = AutoTokenizer.from_pretrained(dequantized_folder(*gemma_3_270m_gguf()))
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    paths = []
    for seed, name in enumerate(("base", "chat")):
        torch.manual_seed(seed)
        config = Gemma3TextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=32,
            layer_types=["sliding_attention", "full_attention"] * 2,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        )
        model = AutoModelForCausalLM.from_config(config)
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        paths.append(str(folder / name))
    return paths[0], paths[1]


def loaded_dtypes(monkeypatch) -> list[torch.dtype]:
    """The dtype of every model `interp.models` loads from now on (load_model, load_pair), in
    load order: what a command asked for, seen in the weights it got."""
    import interp.models

    dtypes: list[torch.dtype] = []
    load_weights = interp.models._load_weights

    def recording(*args, **kwargs) -> LoadedModel:
        loaded = load_weights(*args, **kwargs)
        dtypes.append(next(loaded.model.parameters()).dtype)
        return loaded

    monkeypatch.setattr(interp.models, "_load_weights", recording)
    return dtypes
