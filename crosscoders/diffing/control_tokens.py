"""Control tokens of a chat-formatted token sequence: the tokens the chat template writes around the
messages, which the causal test leaves out of its first-k KL (Minder et al. 2025, sec. 4.3).

The reference (science-of-finetuning/sparsity-artifacts-crosscoders) marks them with a second
chat template (templates/gemma_chat_template_ctrl_tokens.jinja) whose `{% generation %}` blocks
wrap `'<start_of_turn>' + role + '\\n'` and `'<end_of_turn>\\n'` of every turn, the generation
prompt included (tools/tokenization_utils.py, tokenize_with_ctrl_mask). Here the same set is
derived from the tokenizer itself, so that any chat template works:

- every special token of the tokenizer: `all_special_ids` and the added tokens flagged special
  (Gemma: <bos>, <eos>, <pad>, <start_of_turn>, <end_of_turn>, ...);
- the template's own text: the chat template rendered around sentinel message contents splits
  into the pieces it writes before, between and after the messages (Gemma:
  "<bos><start_of_turn>user\\n", "<end_of_turn>\\n<start_of_turn>model\\n", "<end_of_turn>\\n"
  and the generation prompt "<start_of_turn>model\\n"); each piece, tokenized, marks every place
  where its tokens occur in a sequence (so the role name and newlines are marked only where the
  template put them, never inside a message).
"""

from dataclasses import dataclass

import numpy as np

from interp.chat_template import render_chat

PROMPT_SENTINEL = "PROMPTSENTINELTEXT"
RESPONSE_SENTINEL = "RESPONSESENTINELTEXT"


@dataclass(frozen=True)
class ControlTokens:
    special_ids: frozenset[int]
    pieces: tuple[tuple[int, ...], ...]  # token ids of each piece of template text

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ControlTokens":
        special = set(tokenizer.all_special_ids)
        special |= {
            index for index, token in tokenizer.added_tokens_decoder.items() if token.special
        }
        conversation = render_chat(tokenizer, PROMPT_SENTINEL, RESPONSE_SENTINEL)
        prefix, rest = conversation.split(PROMPT_SENTINEL)
        middle, suffix = rest.split(RESPONSE_SENTINEL)
        generation_prompt = render_chat(tokenizer, PROMPT_SENTINEL).split(PROMPT_SENTINEL)[1]
        pieces = []
        for text in (prefix, middle, suffix, generation_prompt):
            ids = tuple(tokenizer(text, add_special_tokens=False).input_ids) if text else ()
            if ids and ids not in pieces:
                pieces.append(ids)
        return cls(frozenset(int(i) for i in special), tuple(pieces))

    def mask(self, token_ids) -> np.ndarray:
        """Boolean mask over `token_ids` ([seq] ints): True at every control token."""
        ids = np.asarray(token_ids, dtype=np.int64)
        out = np.isin(ids, np.fromiter(self.special_ids, dtype=np.int64))
        for piece in self.pieces:
            length = len(piece)
            if length > ids.shape[0]:
                continue
            windows = np.lib.stride_tricks.sliding_window_view(ids, length)
            starts = np.flatnonzero((windows == np.asarray(piece)).all(axis=1))
            for start in starts:
                out[start : start + length] = True
        return out
