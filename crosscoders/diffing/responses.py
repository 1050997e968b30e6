"""Chat-formatted prompts with the chat model's own greedy response: the shared input of the
causal test and the token-shift analysis (both read the response tokens the chat model chose)."""

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from interp.generation import complete, encode_prompts
from interp.models import LoadedModel


@dataclass
class ChatResponse:
    prompt: str
    input_ids: Int[Tensor, " seq"]  # chat template + prompt + greedy response
    response_start: int  # index of the first response token in input_ids

    @property
    def n_response(self) -> int:
        return self.input_ids.shape[0] - self.response_start


def greedy_responses(
    chat: LoadedModel, prompts: list[str], max_new_tokens: int
) -> list[ChatResponse]:
    """Greedy-decode the chat model on each prompt in its chat template (one prompt at a time:
    no padding, so positions match an unbatched forward pass exactly). The response keeps its
    stop token."""
    out = []
    for prompt in prompts:
        batch = encode_prompts(chat.tokenizer, [prompt])
        new_tokens = complete(chat, **batch, max_new_tokens=max_new_tokens)
        prompt_ids = batch["input_ids"][0]
        out.append(
            ChatResponse(prompt, torch.cat([prompt_ids, new_tokens[0].cpu()]), len(prompt_ids))
        )
    return out
