"""Chat-formatted prompts with the chat model's own greedy response: the shared input of the
causal test and the token-shift analysis (both read the response tokens the chat model chose)."""

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from interp.chat_template import END_OF_TURN, render_chat
from interp.models import LoadedModel


@dataclass
class ChatResponse:
    prompt: str
    input_ids: Int[Tensor, " seq"]  # chat template + prompt + greedy response
    response_start: int  # index of the first response token in input_ids

    @property
    def n_response(self) -> int:
        return self.input_ids.shape[0] - self.response_start


def _stop_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if end_of_turn is not None and end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def greedy_responses(
    chat: LoadedModel, prompts: list[str], max_new_tokens: int
) -> list[ChatResponse]:
    """Greedy-decode the chat model on each prompt in its chat template (one prompt at a time:
    no padding, so positions match an unbatched forward pass exactly)."""
    tokenizer = chat.tokenizer
    stops = _stop_ids(tokenizer)
    out = []
    for prompt in prompts:
        text = render_chat(tokenizer, prompt)
        prompt_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        generated = chat.model.generate(
            prompt_ids.to(chat.device),
            attention_mask=torch.ones_like(prompt_ids).to(chat.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
        )[0].cpu()
        out.append(ChatResponse(prompt, generated, prompt_ids.shape[1]))
    return out
