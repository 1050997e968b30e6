"""Which cached tokens belong to which data subset, recomputed from token ids and sequence ids
alone (the cache stores no per-token recipe):

- chat vs wiki: a sequence is chat when it holds a `<start_of_turn>` token (every chat-rendered
  document does; plain wiki text never does);
- chat-template tokens: `<start_of_turn>` and `<end_of_turn>`, the role name and newline after
  `<start_of_turn>`, and the newline after `<end_of_turn>` (Gemma's template,
  interp/chat_template.py); every other token is "other".
"""

from dataclasses import dataclass

import numpy as np

from interp.chat_template import END_OF_TURN

START_OF_TURN = "<start_of_turn>"
SUBSETS = ("wiki", "chat", "template", "other")


@dataclass(frozen=True)
class TemplateTokens:
    start_of_turn: int | None
    end_of_turn: int | None

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TemplateTokens":
        def lookup(token: str) -> int | None:
            index = tokenizer.convert_tokens_to_ids(token)
            return None if index is None or index == tokenizer.unk_token_id else int(index)

        return cls(lookup(START_OF_TURN), lookup(END_OF_TURN))


def _follows(marker: np.ndarray, seq_ids: np.ndarray, distance: int) -> np.ndarray:
    """Tokens `distance` places after a marked token of the same sequence."""
    out = np.zeros_like(marker)
    out[distance:] = marker[:-distance] & (seq_ids[distance:] == seq_ids[:-distance])
    return out


def token_subsets(
    token_ids: np.ndarray, seq_ids: np.ndarray, template: TemplateTokens
) -> dict[str, np.ndarray]:
    """Boolean masks over the cached token stream (in cache order), one per name of SUBSETS.
    Relies on the stream holding each sequence's kept tokens contiguously and in order."""
    is_start = (
        token_ids == template.start_of_turn
        if template.start_of_turn is not None
        else np.zeros(token_ids.shape, dtype=bool)
    )
    is_end = (
        token_ids == template.end_of_turn
        if template.end_of_turn is not None
        else np.zeros(token_ids.shape, dtype=bool)
    )
    chat = np.isin(seq_ids, np.unique(seq_ids[is_start]))
    template_mask = (
        is_start
        | is_end
        | _follows(is_start, seq_ids, 1)
        | _follows(is_start, seq_ids, 2)
        | _follows(is_end, seq_ids, 1)
    )
    return {"wiki": ~chat, "chat": chat, "template": template_mask, "other": ~template_mask}
