"""Completions of prompts by a loaded HF model: one stop rule for every caller.

The stop rule: a row stops at its first stop token (`stop_token_ids`: EOS and, where the
vocabulary has it, the chat template's end-of-turn token) and is padded after it. Every greedy
caller (the TuCo experiments, the organism's teacher and card, the diffing responses, the steering
evaluation and the latent explorer) decodes through `complete`, so they all stop alike.

Prompts are left-padded (generation continues from the right edge): `encode_prompts` passes the
padding side to the tokenizer call, never by setting `tokenizer.padding_side`, so a tokenizer
shared with other code keeps its own setting.

The forward passes are HF `generate` on the loaded model itself: edits hooked into its blocks
(steering maps, TuCo's alpha-scaling, `interp.hooks.residual_edit`) act on every generated token.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPast

from interp.chat_template import END_OF_TURN, render_chat
from interp.errors import InterpError
from interp.models import LoadedModel

# The key/value cache's name in model outputs and generate's arguments: `cache` since transformers
# 5.2x, `past_key_values` before (5.17, the lent GPU machine's, has only that; later versions
# still accept it with a deprecation warning).
KV_CACHE = (
    "cache" if "cache" in {f.name for f in fields(BaseModelOutputWithPast)} else "past_key_values"
)


def stop_token_ids(tokenizer) -> list[int]:
    """EOS and, where the vocabulary has it, the chat template's end-of-turn token."""
    ids = [tokenizer.eos_token_id]
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if end_of_turn is not None and end_of_turn != tokenizer.unk_token_id:
        ids.append(end_of_turn)
    return ids


def position_ids_from_mask(attention_mask: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq"]:
    """Positions counted over real tokens only, so a left-padded row sees the same positions as
    the same prompt unpadded (what `generate` does)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def encode_prompts(
    tokenizer, prompts: Sequence[str], chat_template: bool = True, padding_side: str = "left"
) -> dict[str, Tensor]:
    """`input_ids` and `attention_mask` of the prompts, each rendered as one user turn ending
    with the generation prompt (or left raw, with the tokenizer's own special tokens), padded on
    `padding_side`."""
    if not prompts:
        raise InterpError("no prompts given: expected at least one")
    texts = [render_chat(tokenizer, p) for p in prompts] if chat_template else list(prompts)
    batch = tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        padding_side=padding_side,
        add_special_tokens=not chat_template,
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@torch.no_grad()
def complete(
    loaded: LoadedModel,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"],
    max_new_tokens: int = 30,
    do_sample: bool = False,
    num_return_sequences: int = 1,
    use_cache: bool = True,
    seed: int = 0,
    share_prefill: bool = False,
) -> Int[Tensor, "batch_x_samples new_tokens"]:
    """Greedy or sampled completions of left-padded prompts; only the new tokens, prompt-major
    rows (the samples of prompt i are rows i*n .. i*n+n-1), padded after a stop token.

    `share_prefill` runs each prompt once and copies its KV cache to its n samples (HF would
    prefill every copy): n times less prompt compute. Not under TuCo's `alpha_scaled`, whose
    base-block cache is private to the hooks."""
    if bool((attention_mask[:, -1] == 0).any()):
        raise InterpError(
            "generate needs left-padded prompts: use encode_prompts(padding_side='left')"
        )
    torch.manual_seed(seed)
    tokenizer = loaded.tokenizer
    stops = stop_token_ids(tokenizer)
    input_ids, attention_mask = input_ids.to(loaded.device), attention_mask.to(loaded.device)
    # Plain sampling at temperature 1: no top-k/top-p inherited from the model's generation config.
    extra: dict = {"top_k": 0, "top_p": 1.0, "temperature": 1.0} if do_sample else {}
    prompt_length = input_ids.shape[1]
    if share_prefill and use_cache and num_return_sequences > 1 and prompt_length > 1:
        # The cache holds all prompt tokens but the last; generate feeds that one and goes on.
        cache = loaded.model.get_decoder()(
            input_ids=input_ids[:, :-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=position_ids_from_mask(attention_mask)[:, :-1],
            use_cache=True,
        )[KV_CACHE]
        cache.batch_repeat_interleave(num_return_sequences)
        extra[KV_CACHE] = cache
        input_ids = input_ids.repeat_interleave(num_return_sequences, dim=0)
        attention_mask = attention_mask.repeat_interleave(num_return_sequences, dim=0)
        num_return_sequences = 1
    output = loaded.model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_return_sequences=num_return_sequences,
        use_cache=use_cache,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
        eos_token_id=stops,
        **extra,
    )
    return output[:, prompt_length:]


@dataclass
class Completion:
    ids: list[int]  # the new tokens before the stop token
    stop: int | None  # the stop token that ended it; None when it ran to max_new_tokens

    def text(self, tokenizer) -> str:
        return tokenizer.decode(self.ids, skip_special_tokens=True)


def before_stop(
    tokenizer, new_tokens: Int[Tensor, "rows new_tokens"]
) -> Bool[Tensor, "rows new_tokens"]:
    """True for each new token before its row's first stop token (or pad, which only follows a
    stop)."""
    ids = [i for i in (*stop_token_ids(tokenizer), tokenizer.pad_token_id) if i is not None]
    stops = torch.tensor(ids, device=new_tokens.device)
    return torch.isin(new_tokens, stops).long().cumsum(-1) == 0


def cut_at_stop(tokenizer, new_tokens: Int[Tensor, "rows new_tokens"]) -> list[Completion]:
    """Each row up to its first stop token, and that token."""
    lengths = before_stop(tokenizer, new_tokens).sum(-1).tolist()
    completions = []
    for row, end in zip(new_tokens.tolist(), lengths, strict=True):
        completions.append(Completion(row[:end], row[end] if end < len(row) else None))
    return completions


def decode_completions(tokenizer, new_tokens: Int[Tensor, "rows new_tokens"]) -> list[str]:
    """Completion texts, cut at the first stop token."""
    return [completion.text(tokenizer) for completion in cut_at_stop(tokenizer, new_tokens)]


def greedy_completions(
    loaded: LoadedModel,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    chat_template: bool = True,
) -> list[Completion]:
    """Greedy completions of `prompts` (in the chat template unless `chat_template` is False),
    in batches of `batch_size` left-padded prompts; results keep the order of `prompts`."""
    if batch_size < 1:
        raise InterpError(f"batch size {batch_size} is invalid: expected >= 1")
    completions: list[Completion] = []
    for start in range(0, len(prompts), batch_size):
        batch = encode_prompts(loaded.tokenizer, prompts[start : start + batch_size], chat_template)
        new_tokens = complete(loaded, **batch, max_new_tokens=max_new_tokens)
        completions.extend(cut_at_stop(loaded.tokenizer, new_tokens))
    return completions
