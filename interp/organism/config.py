"""The exact recipe of the chat-tune, saved as data/chat-tune/config.json beside the adapter."""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from interp.builtin_models import CHAT_TUNE_DIR
from interp.errors import InterpError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ChatTuneConfig:
    seed: int = 0
    base: str = "gemma-3-270m"
    # data: teacher answers to benign prompts, project refusals to harmful ones
    teacher: str = "smollm2-135m-instruct"
    n_benign_train: int = 826  # all of chat-benign's train split
    n_benign_heldout: int = 32
    # 480 of the recipe's 1,238 train prompts: with 240, two epochs refused 0.72 of the held-out
    # harmful prompts (issue 16's bar: >= 0.8); more distinct harmful prompts generalise further
    n_harmful_train: int = 480
    # project-written benign requests (data/chat-tune/benign_requests.txt: imperatives, advice,
    # health, parenting, recipes, emails, code), all in train: the bundled benign prompts are
    # mostly chit-chat and questions while the harmful ones are imperatives, and a chat-tune on
    # those alone learned "imperative => refuse" (issue 16: 36% refusals on benign requests)
    n_benign_requests: int = 264
    # where the teacher refuses a benign chatterbot prompt ("you are cruel"), train on the
    # corpus's own reply instead of dropping the prompt: dropping taught over-refusal
    corpus_reply_when_teacher_refuses: bool = True
    # plain-text replay: this many bundled Wikipedia train summaries trained on as plain text
    # (loss on every token, as the narrow organism's documents) beside the conversations, so the
    # chat-tune keeps the base's language modelling (card: wiki perplexity <= 1.3x base)
    n_wiki_replay: int = 320
    teacher_max_new_tokens: int = 48
    teacher_batch_size: int = 32
    # bfloat16 matmuls run ~2.4x faster than float32 on this CPU (avx512_bf16)
    teacher_dtype: str = "bfloat16"
    # LoRA on every attention and MLP projection
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS
    # optimisation: AdamW, linear warm-up then cosine decay, three epochs (one left 36% of the
    # card's out-of-source benign requests refused, two 12%: refusal is learnt first, the
    # boundary later)
    learning_rate: float = 7e-4
    warmup_steps: int = 8
    batch_size: int = 8
    autocast_dtype: str = "bfloat16"  # forward/backward matmuls; LoRA weights stay float32
    epochs: int = 3
    max_tokens: int = 160  # prompt + response, per example
    checkpoint_every_s: float = 180.0

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, object]) -> "ChatTuneConfig":
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = set(payload) - fields
        if unknown:
            raise InterpError(f"unknown chat-tune config keys {sorted(unknown)}: expected {fields}")
        values = dict(payload)
        if "lora_targets" in values:
            values["lora_targets"] = tuple(values["lora_targets"])
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> "ChatTuneConfig":
        return cls.from_json(json.loads(path.read_text()))


DEFAULT_OUTPUT = CHAT_TUNE_DIR
BENIGN_REQUESTS_FILE = CHAT_TUNE_DIR / "benign_requests.txt"
# the card's benign set, written apart from every training source (tests/test_organisms.py)
BENIGN_EVAL_FILE = CHAT_TUNE_DIR / "benign_eval.txt"


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line; blank lines and `#` comment lines are skipped."""
    if not path.exists():
        raise InterpError(f"prompt file {path} does not exist")
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
